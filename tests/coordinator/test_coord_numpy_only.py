"""Spec: the coordinator runtime imports with numpy alone (no torch, prefect or pipeline)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
for blocked in ("torch", "torchaudio", "prefect", "pipeline", "tasks", "flows", "liquid_audio", "yaml"):
    sys.modules[blocked] = None  # any import of these now raises ImportError
before = set(sys.modules)
import coordinator
import coordinator.constants, coordinator.coordinator, coordinator.detector, coordinator.matchers
import coordinator.signature
import coordinator.timeline, coordinator.tokens
third_party = sorted({
    name.split(".")[0] for name in set(sys.modules) - before
    if sys.modules[name] is not None and name.split(".")[0] not in sys.stdlib_module_names
})
print(json.dumps(third_party))
"""


def test_coordinator_imports_with_numpy_only():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    third_party = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(third_party) <= {"coordinator", "numpy"}, third_party


CONSTANTS_PROBE = r"""
import json, sys
before = set(sys.modules)
import coordinator.constants
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_constants_load_alone():
    """A stage importing the token ids depends on coordinator/constants.py and the package's empty __init__ only."""
    proc = subprocess.run(
        [sys.executable, "-c", CONSTANTS_PROBE], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["coordinator", "coordinator.constants"]
