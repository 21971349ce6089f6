"""LFM2.5-Audio's stream constants, defined once: special text ids and Mimi's code layout.

Why a module of its own, with no imports: every layer needs these numbers (the
coordinator, the inference path, preprocessing, the tiny-model fabrication), and
a stage that imports them should not depend on any logic -- an edit to the
coordinator's code must not rerun training. liquid-audio 1.3.0 hard-codes the
text ids 7, 128 and 130 in generation; the values below follow it.
"""

#: Text ids (LFM2.5-Audio tokenizer).
IM_END_TOKEN = 7  # <|im_end|>: ends the turn (generate_interleaved stops on it without yielding it)
AUDIO_START_TOKEN = 128  # <|audio_start|>
TEXT_END_TOKEN = 130  # <|text_end|>: text channel done, audio may continue

#: Mimi codes: 8 codebooks per audio frame, codes 0..2047; 2048 (in codebook 0) ends the audio.
N_CODEBOOKS = 8
END_OF_AUDIO_CODE = 2048

#: Mimi's audio: 24 kHz, one frame of codes per 1920 samples (12.5 Hz, 80 ms).
MIMI_SAMPLE_RATE = 24_000
MIMI_FRAME_SAMPLES = 1920
MIMI_FRAME_RATE_HZ = MIMI_SAMPLE_RATE / MIMI_FRAME_SAMPLES
MIMI_FRAME_SECONDS = MIMI_FRAME_SAMPLES / MIMI_SAMPLE_RATE
