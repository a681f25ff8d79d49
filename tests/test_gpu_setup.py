"""`make setup`'s choice of onnxruntime build (infra/setup/gpu_runtime.py), with the machine faked: an override,
the driver's /proc file, nvidia-smi; and the pinned GPU requirement is the CPU build's version, hash-pinned."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from infra.foundation.paths import PROJECT_ROOT
from infra.setup import gpu_runtime as gr

NONE = Path("/nonexistent/nvidia/version")


def no_smi(_name):
    return None


def test_override_wins_both_ways(tmp_path):
    driver = tmp_path / "version"
    driver.write_text("NVRM version: 550")
    assert gr.detect({"ROLLCALL_GPU": "1"}, NONE, no_smi)[0] is True
    assert gr.detect({"ROLLCALL_GPU": "0"}, driver, no_smi)[0] is False


def test_driver_file_or_nvidia_smi_listing_a_gpu(tmp_path):
    driver = tmp_path / "version"
    driver.write_text("NVRM version: 550")
    assert gr.detect({}, driver, no_smi) == (True, f"NVIDIA driver loaded ({driver})")
    listed = lambda *a, **k: subprocess.CompletedProcess(a, 0, "GPU 0: NVIDIA H200 (UUID: x)\n", "")  # noqa: E731
    empty = lambda *a, **k: subprocess.CompletedProcess(a, 9, "", "no devices")  # noqa: E731
    assert gr.detect({}, NONE, lambda _n: "/usr/bin/nvidia-smi", listed)[0] is True
    assert gr.detect({}, NONE, lambda _n: "/usr/bin/nvidia-smi", empty) == (False, "no NVIDIA driver found")
    assert gr.detect({}, NONE, no_smi) == (False, "no NVIDIA driver found")


def test_script_exit_status_says_which(tmp_path):
    script = PROJECT_ROOT / "infra/setup/gpu_runtime.py"
    for value, code, word in (("1", 0, "gpu"), ("0", 1, "cpu")):
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              env={"ROLLCALL_GPU": value, "PATH": "/usr/bin:/bin"}, timeout=30)
        assert done.returncode == code and done.stdout.startswith(word)


def test_gpu_requirement_pins_the_cpu_builds_version_with_a_hash():
    cpu = re.search(r"^onnxruntime==(\S+)", (PROJECT_ROOT / "requirements.lock").read_text(), re.M).group(1)
    gpu = (PROJECT_ROOT / "requirements-gpu.lock").read_text()
    assert re.search(rf"^onnxruntime-gpu=={re.escape(cpu)} --hash=sha256:[0-9a-f]{{64}}$", gpu, re.M)
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "infra/setup/gpu_runtime.py" in makefile and "-r requirements-gpu.lock" in makefile
