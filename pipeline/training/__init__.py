"""Fine-tuning LFM2.5-Audio with liquid-audio's step, resumable after a crash (the ``train`` stage's logic).

Read in this order:

- ``config``: ``TrainParams`` (the ``train`` params group) and the run fingerprint;
- ``data``: the preprocessed splits and a seeded, sharded, resumable data order;
- ``trainer``: ``Trainer``, the loop (step, validation, metrics, checkpoint save/restore);
- ``checkpoints``: the on-disk checkpoint format, and when old checkpoints may go;
- ``metrics``: interval stats, peak memory, DVCLive;
- ``model_folder``: the base model in, the trained model folder out;
- ``run_control``: launching under ``accelerate``, dying with the launcher, the run lock.

``tasks/train.py`` puts them together.
"""
