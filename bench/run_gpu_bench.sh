#!/usr/bin/env bash
# One command on a GPU machine (torch 2.11 installed, nothing else assumed, no network):
#   bash bench/run_gpu_bench.sh [bench_train_gpu.py args]      e.g. --expandable-only, --fill 0.8
# Installs the wheels in .whl/ (liquid-audio and its pure-runtime deps, see docs/training.md) into
# /tmp/site without touching the system, then runs bench/bench_train_gpu.py (full-size model,
# bs 2, ctx 512, bf16; stock vs our step; expandable_segments on and off). JSON: $OUT/train_gpu.json
# when $OUT is set, else bench/results/train_gpu.json; the table is also saved next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  if "$PY" -m pip --version > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
  else  # no pip: a wheel is a zip of importable files; enough for imports
    echo "run_gpu_bench: no pip, unzipping the wheels into /tmp/site" >&2
    for wheel in .whl/*.whl; do "$PY" -m zipfile -e "$wheel" /tmp/site; done
  fi
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "run_gpu_bench: no .whl/*.whl here; using the installed packages" >&2
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'PY'
import importlib, sys
missing = []
for name in ("torch", "torchaudio", "numpy", "liquid_audio.trainer", "accelerate", "transformers", "datasets", "safetensors", "einops"):
    try:
        importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - report every missing piece at once
        missing.append(f"{name}: {type(err).__name__}: {err}")
if missing:
    sys.exit("run_gpu_bench: cannot import\n  " + "\n  ".join(missing))
import torch
print(f"run_gpu_bench: python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"cuda {torch.version.cuda}, devices {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}")
if not torch.cuda.is_available():
    sys.exit("run_gpu_bench: no CUDA device visible")
PY
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader 2>/dev/null || true
RESULTS=${OUT:-bench/results}
mkdir -p "$RESULTS"
set +e
"$PY" bench/bench_train_gpu.py --out "$RESULTS/train_gpu.json" "$@" 2>&1 | tee "$RESULTS/train_gpu.txt"
exit "${PIPESTATUS[0]}"
