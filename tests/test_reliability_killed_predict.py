"""`fastseg predict` killed outright (SIGKILL, no chance to clean up) and run again: every output is
a complete PNG with the Segmenter's labels, and no temporary or other stray file is left. Also an
output that cannot be written in the middle of a run: that image fails, the others are written.

(A --out that cannot be written at all is refused before the model loads: test_cli_predict.py.)
Part of the reliability suite (`pytest -m reliability`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fastseg.segmenter import Segmenter

from _cli import fastseg_cli, read_png, write_image

pytestmark = pytest.mark.reliability

IMAGES = 16


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    for i in range(IMAGES):
        write_image(src / f"img{i:02d}.png", 96 + 8 * (i % 3), 128, seed=i)
    return src


def expected_files(out, kinds=("labels", "color", "overlay")) -> list[str]:
    return sorted(f"{kind}/img{i:02d}.png" for kind in kinds for i in range(IMAGES))


def all_files(out) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def kill_when_some_are_written(command: list[str], labels_dir, at_least: int) -> int:
    """Start `command`, SIGKILL it once `at_least` label files exist; how many existed then."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            written = len(list(labels_dir.glob("*.png"))) if labels_dir.is_dir() else 0
            if written >= at_least:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return written
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pytest.fail(f"predict ended (status {proc.returncode}) before {at_least} images were written")


def test_sigkilled_predict_resumes_with_every_output_valid(folder, tmp_path, model_file):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fastseg", "predict", str(folder), "--out", str(out), "--model", str(model_file)]
    written = [kill_when_some_are_written(command, out / "labels", at_least) for at_least in (2, 7)]
    assert len(all_files(out)) < len(expected_files(out)), "the runs were killed too late to test anything"
    assert written[1] >= 7

    assert fastseg_cli("predict", folder, "--out", out, "--model", model_file) == 0
    assert all_files(out) == expected_files(out), "a stray or missing file"
    seg = Segmenter(model_file)
    for i in range(IMAGES):
        labels = read_png(out / "labels" / f"img{i:02d}.png")
        np.testing.assert_array_equal(labels, seg.predict(read_png(folder / f"img{i:02d}.png")).labels)
        for kind in ("color", "overlay"):
            assert read_png(out / kind / f"img{i:02d}.png").shape == (*labels.shape, 3)


def test_an_output_that_cannot_be_written_fails_that_image_only(folder, tmp_path, model_file, capsys):
    out = tmp_path / "out"
    (out / "color" / "img03.png").mkdir(parents=True)  # a folder where img03's colour picture goes
    assert fastseg_cli("predict", folder, "--out", out, "--model", model_file, "--save", "labels,color") == 1
    text = capsys.readouterr()
    assert "img03.png" in text.err and "1 failed" in text.out, text
    files = all_files(out)
    assert files == [f for f in expected_files(out, ("labels", "color")) if f != "color/img03.png"], files
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "a temporary file was left"
