"""What an installed fastseg carries besides its modules: the py.typed marker (type checkers read
fastseg's annotations) and the packaged model. setup.py's build_py step lays out
the package as a wheel would hold it (setuptools adds py.typed by itself)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_build_lays_out_marker_and_weights(tmp_path):
    run = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    package = tmp_path / "fastseg"
    assert (package / "py.typed").is_file()
    assert (package / "weights" / "camvid_unet_resnet18.safetensors").is_file()
    assert (package / "weights" / "camvid_unet_resnet18.json").is_file()
    assert (package / "weights" / "camvid_unet_resnet18.int8.onnx").is_file()  # precision="int8"
