"""Which onnxruntime `make setup` installs: the GPU build (onnxruntime-gpu, requirements-gpu.lock) on a
machine with an NVIDIA driver, else the CPU build already in requirements.lock. Standard library only: it
runs before the virtual environment has anything.

    python3 infra/setup/gpu_runtime.py          # prints "gpu" or "cpu" and why, exit 0 for gpu, 1 for cpu

``ROLLCALL_GPU=1`` / ``0`` overrides the detection (a container that hides the driver, or a GPU not to use).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DRIVER_FILE = Path("/proc/driver/nvidia/version")


def detect(env: dict[str, str] | None = None, driver_file: Path = DRIVER_FILE, which=shutil.which,
           run=subprocess.run) -> tuple[bool, str]:
    """(use the GPU build, why) from ROLLCALL_GPU, the NVIDIA driver's /proc file, or ``nvidia-smi -L``."""
    env = os.environ if env is None else env
    forced = env.get("ROLLCALL_GPU", "").strip().lower()
    if forced in ("1", "yes", "true", "gpu"):
        return True, "ROLLCALL_GPU asks for it"
    if forced in ("0", "no", "false", "cpu"):
        return False, "ROLLCALL_GPU says no GPU"
    if driver_file.is_file():
        return True, f"NVIDIA driver loaded ({driver_file})"
    smi = which("nvidia-smi")
    if smi:
        try:
            listed = run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            listed = ""
        if "GPU" in listed:
            return True, "nvidia-smi lists a GPU"
    return False, "no NVIDIA driver found"


if __name__ == "__main__":
    gpu, why = detect()
    print(f"{'gpu' if gpu else 'cpu'}: {why}")
    sys.exit(0 if gpu else 1)
