"""Large frames: memory goes back after one, and frames above the pixel budget run as tiles (or
batches run a few images at a time) instead of taking gigabytes or failing in the allocator.

Part of the reliability suite (`pytest -m reliability`)."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastseg.models import base as model_base
from fastseg.segmenter import Segmenter, Tiling

from _images import image

pytestmark = pytest.mark.reliability

# Frames here must reach the network at their full size: where the Segmenter resizes inputs to the
# model's scale by default, scale=1 turns that off.
FULL_SIZE = {"scale": 1} if "scale" in inspect.signature(Segmenter).parameters else {}

# In a fresh process (the test run's own allocations would hide it): the default Segmenter on video
# frames, one large frame, video frames again; the resident set at each step and the large frame's peak.
PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from fastseg import Segmenter
    from fastseg.segmenter.openvino_runtime import IDLE_CALLS

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    seg = Segmenter(**json.loads(sys.argv[1]))
    video = np.zeros((360, 480, 3), np.uint8)
    for _ in range(3):
        seg.predict(video)
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak mark restarts here
    side = int(sys.argv[2])
    large = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    assert seg.predict(large).labels.shape == (side, side)
    peak = status("VmHWM")
    for _ in range(IDLE_CALLS + 2):  # OpenVINO drops a larger frame's compiled model after these
        seg.predict(video)
    print(json.dumps({"runtime": seg.runtime.name, "before": before, "peak": peak, "after": status("VmRSS")}))
""")


@pytest.mark.parametrize("runtime", ["auto", "onnxruntime", "openvino"])
def test_memory_goes_back_after_a_large_frame(runtime):
    """The default model's own runtime (torch, Winograd's workspace reused; OpenVINO on a CPU with
    AMX), ONNX Runtime, whose arena would keep the large frame's peak for the rest of the process,
    and OpenVINO, whose compiled model for the large frame holds it until dropped."""
    side = 1600
    run = subprocess.run([sys.executable, "-c", PROBE, json.dumps(dict(FULL_SIZE, runtime=runtime)), str(side)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    m = json.loads(run.stdout.splitlines()[-1])
    grown, kept = m["peak"] - m["before"], m["after"] - m["before"]
    print(f"{m['runtime']}: {m['before'] / 2**20:.0f} MiB on video frames, peak +{grown / 2**20:.0f} MiB "
          f"on a {side}x{side} frame, +{kept / 2**20:.0f} MiB kept after it")
    assert grown > 200 * 2**20, "the large frame did not reach the network at full size"
    # With ONNX Runtime's arena the whole peak stays (+792 MiB kept of the same frame's growth); without
    # it, what stays is the C allocator's free lists, up to a quarter of the growth on a busy machine.
    assert kept < 0.5 * grown, m


# ---- the pixel budget --------------------------------------------------------------------------

SEEN: list[tuple[int, ...]] = []  # the shape of every batch the network ran on (fuse copies the model)


class Recording(model_base.SegmentationModel):
    """A small convolutional model that records the size of each batch it runs on."""

    output_stride = 4

    def __init__(self, classes=4):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.body = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, classes, 1))

    def forward_logits(self, x):
        SEEN.append(tuple(x.shape))
        return self.body(F.relu(self.embed(x)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Recording().eval()


def test_an_image_above_the_budget_runs_as_tiles(model):
    budget = 64 * 64
    frame = image(150, 200, seed=1)
    SEEN.clear()
    got = Segmenter(model, runtime="torch", max_pixels=budget, **FULL_SIZE).predict(frame).labels
    assert SEEN and all(n * h * w <= budget for n, _, h, w in SEEN), SEEN
    want = Segmenter(model, runtime="torch", tiling=Tiling(size=(64, 64)), **FULL_SIZE).predict(frame).labels
    np.testing.assert_array_equal(got, want)
    SEEN.clear()
    whole = Segmenter(model, runtime="torch", max_pixels=None, **FULL_SIZE).predict(frame).labels
    assert SEEN == [(1, 3, 150, 200)] and whole.shape == got.shape  # None: one call at full size


def test_a_batch_above_the_budget_runs_a_few_images_at_a_time(model):
    frames = np.stack([image(40, 48, seed=s) for s in range(5)])
    SEEN.clear()
    got = Segmenter(model, runtime="torch", max_pixels=2 * 40 * 48, **FULL_SIZE).predict(frames).labels
    assert [s[0] for s in SEEN] == [2, 2, 1] and all(s[2:] == (40, 48) for s in SEEN), SEEN
    want = np.stack([Segmenter(model, runtime="torch", **FULL_SIZE).predict(f).labels for f in frames])
    np.testing.assert_array_equal(got, want)


def test_budget_arguments():
    for bad in (0, -5, 2.5, "big", True):
        with pytest.raises(ValueError, match="max_pixels"):
            Segmenter(Recording(), runtime="torch", max_pixels=bad)
    tiny = Segmenter(Recording(), runtime="torch", max_pixels=3, **FULL_SIZE)  # not one 4x4 tile
    with pytest.raises(ValueError, match=r"tiling=Tiling\(size="):
        tiny.predict(image(16, 16, seed=2))
