"""The Segmenter's CUDA frame path (fastseg/segmenter/cuda_frames.py) on the CPU, which stands in for
the device: the same upload through staging buffers, normalisation, stages, graph-style replay into
static buffers, readback and per-stage clock, with ordinary memory and host clocks. What only a GPU
can show (page-locked copies, events, graph capture, synchronisation) is in test_segmenter_cuda.py.
"""
from __future__ import annotations

import ast
import contextlib
import inspect

import numpy as np
import pytest
import torch
from PIL import Image

import fastseg
from fastseg.segmenter import Segmenter, cuda_frames
from fastseg.segmenter.cuda_frames import Clock, CudaFrames, FrameLoop

from _images import agreement, image
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    model = fastseg.models.create("lraspp_mobilenet_v3_large", num_classes=7).eval()
    return Segmenter(model, runtime="torch")


def _run(frames: CudaFrames, batch, confidence=False, loop=None):
    with torch.inference_mode():
        return frames.run(batch, confidence, loop)


def _inputs():
    a, b = image(37, 53, seed=1), image(24, 40, seed=2)
    return {
        "numpy": a,
        "numpy batch": image(30, 44, seed=3, n=2),
        "list of sizes": [a, b, image(37, 53, seed=4)],
        "PIL": Image.fromarray(b),
        "torch uint8": torch.from_numpy(a).permute(2, 0, 1).contiguous(),
        "torch float": torch.from_numpy(b).permute(2, 0, 1).float() / 255,
    }


@pytest.mark.parametrize("kind", list(_inputs()))
def test_frame_path_gives_predicts_answer(seg, kind):
    batch = _inputs()[kind]
    expected = seg.predict(batch, return_confidence=True)
    got = _run(CudaFrames(seg), batch, confidence=True)
    assert type(got.labels) is type(expected.labels)
    for g, e, gc, ec in zip(*(x if isinstance(x, list) else [x] for x in
                              (got.labels, expected.labels, got.confidence, expected.confidence))):
        assert g.shape == e.shape and g.dtype == e.dtype
        assert agreement(g, e) >= 0.999
        np.testing.assert_allclose(np.asarray(gc), np.asarray(ec), rtol=0, atol=1e-5)
    assert set(got.timings) == {"preprocess", "model", "tail", "total"}
    assert got.timings["total"] == pytest.approx(sum(v for k, v in got.timings.items() if k != "total"))


@pytest.mark.parametrize("graphs", [False, True])
def test_stream_loop_reuses_its_buffers_and_reads_each_new_frame(seg, graphs):
    """A replayed graph reads its static input: each frame must land there before the replay, and its
    labels come back in the loop's own readback buffers (overwritten by the next frame)."""
    frames = [image(37, 53, seed=s) for s in range(4)]
    loop = FrameLoop(graphs=graphs)
    fr = CudaFrames(seg)
    held, got = None, []
    for f in frames:
        r = _run(fr, f, confidence=True, loop=loop)
        held = r if held is None else held
        assert np.shares_memory(r.labels, held.labels) and np.shares_memory(r.confidence, held.confidence)
        got.append((r.labels.copy(), r.confidence.copy()))
    for f, (labels, conf) in zip(frames, got):
        expected = seg.predict(f, return_confidence=True)
        assert agreement(labels, expected.labels) >= 0.999
        np.testing.assert_allclose(conf, expected.confidence, rtol=0, atol=1e-5)
    assert not np.array_equal(got[0][1], got[1][1])  # different frames, different answers: nothing stale
    assert len(loop._slots) == 1


def test_loop_keeps_the_latest_shapes_only(seg):
    loop, fr = FrameLoop(graphs=True), CudaFrames(seg)
    for h in range(20, 20 + 2 * (FrameLoop.KEEP + 2), 2):
        _run(fr, image(h, 32, seed=h), loop=loop)
    assert len(loop._slots) == FrameLoop.KEEP


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("source", ["uint8 hwc", "float"])
def test_normalise_rounds_once(dtype, source):
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (2, 9, 13, 3), dtype=torch.uint8, generator=g)
    images = u8.permute(0, 3, 1, 2) if source == "uint8 hwc" else u8.permute(0, 3, 1, 2).float() / 255
    scale = torch.tensor([0.017, 0.0175, 0.0174]).view(1, 3, 1, 1)
    shift = torch.tensor([2.1, 2.03, 1.8]).view(1, 3, 1, 1)
    unit = scale if source == "uint8 hwc" else scale * 255
    out = torch.empty((2, 3, 9, 13), dtype=dtype).contiguous(memory_format=torch.channels_last)
    got = cuda_frames.normalise(images, unit, -shift, out)
    assert got is out and out.is_contiguous(memory_format=torch.channels_last)
    exact = images.double() * unit.float().double() - shift.double()
    tolerance = {torch.float32: 2e-6, torch.float16: 0, torch.bfloat16: 0}[dtype]
    err = (got.double() - exact.to(dtype).double()).abs().max().item()
    assert err <= tolerance * exact.abs().max().item() or (dtype == torch.float32 and err < 1e-6)
    if source == "uint8 hwc" and dtype == torch.float32:  # the CPU path's native kernel: the same values
        native = fastseg.ops.normalize_image(images, scale, shift)
        torch.testing.assert_close(got, native, rtol=0, atol=1e-6)


class _RecordingCRF:
    """A CRF that records where its inputs live and answers on the probabilities' device."""

    def __init__(self):
        self.devices = []

    def __call__(self, image, z, logits, return_labels):
        self.devices.append((image.device, z.device, image.dtype, tuple(image.shape)))
        return z, z.argmax(1).to(torch.uint8)


def test_crf_image_goes_to_the_logits_device(seg):
    """The CRF stage must hand the image to the CRF on the device of the probabilities: a CUDA CRF
    refuses a host image next to device probabilities (here the meta device stands in for CUDA)."""
    crf = _RecordingCRF()
    host = Segmenter(seg.model, runtime="torch", crf=crf)
    z = torch.zeros((1, 7, 5, 6), device="meta")
    host._refine(torch.zeros((1, 5, 6, 3), dtype=torch.uint8), z, return_confidence=False)
    assert crf.devices[-1][:3] == (torch.device("meta"), torch.device("meta"), torch.uint8)

    for batch in (image(21, 30, seed=5), torch.from_numpy(image(21, 30, seed=5)).permute(2, 0, 1)):
        expected = host.predict(batch).labels
        got = _run(CudaFrames(host), batch)
        assert crf.devices[-1][3] == (1, 21, 30, 3)
        assert agreement(np.asarray(got.labels), np.asarray(expected)) == 1.0
        assert set(got.timings) == {"preprocess", "model", "tail", "crf", "total"}
    # with graphs: the CRF runs after the replay, on the replayed logits of each new frame
    loop, fr = FrameLoop(graphs=True), CudaFrames(host)
    for k in range(3):
        f = image(21, 30, seed=20 + k)
        got = _run(fr, f, confidence=True, loop=loop)
        expected = host.predict(f, return_confidence=True)
        assert agreement(got.labels, expected.labels) == 1.0
        np.testing.assert_allclose(got.confidence, expected.confidence, rtol=0, atol=1e-5)


def test_frame_path_never_waits_per_stage(seg, monkeypatch):
    """The CPU path waits for the device after each stage (runtime.sync) to time it; the frame path
    times stages with events instead, so it must never call sync."""
    s = Segmenter(seg.model, runtime="torch")
    s._frames = CudaFrames(s)

    def no_sync():
        raise AssertionError("the frame path called runtime.sync")

    monkeypatch.setattr(s.runtime, "sync", no_sync)
    frames = [image(30, 40, seed=k) for k in range(3)]
    assert s.predict(frames[0]).labels.shape == (30, 40)
    assert [r.labels.shape for r in s.stream(iter(frames))] == [(30, 40)] * 3


class _Event:
    log: list = []

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.t = None

    def record(self, stream):
        self.t = len(_Event.log)
        _Event.log.append(("record", stream))

    def synchronize(self):
        _Event.log.append(("synchronize", self.t))

    def elapsed_time(self, other):
        return 1000.0 * (other.t - self.t)  # milliseconds: one second per mark


def _clock(monkeypatch, capturing=False):
    _Event.log = []
    monkeypatch.setattr(cuda_frames, "capturing", lambda: capturing)
    clock = Clock("stream", ("preprocess", "model", "tail"), event=_Event)
    for stage in ("preprocess", "model", "tail"):
        clock.mark(stage)
    return clock


def test_clock_reads_events_after_the_one_wait(monkeypatch):
    clock = _clock(monkeypatch)
    last = clock.finish(wait=True)
    assert [e for e in _Event.log if e[0] == "synchronize"] == [("synchronize", 3)] and last.t == 3
    assert all(stream == "stream" for what, stream in _Event.log if what == "record")
    assert clock.timings() == {"preprocess": 1.0, "model": 1.0, "tail": 1.0, "total": 3.0}


def test_clock_of_device_outputs_waits_only_when_read(monkeypatch):
    clock = _clock(monkeypatch)
    assert clock.finish(wait=False).t == 3
    timings = clock.timings()
    assert not [e for e in _Event.log if e[0] == "synchronize"]  # nothing waited yet
    assert timings["model"] == 1.0 and dict(timings)["total"] == 3.0
    assert [e for e in _Event.log if e[0] == "synchronize"] == [("synchronize", 3)]


def test_clock_records_nothing_inside_a_capture(monkeypatch):
    clock = _clock(monkeypatch, capturing=True)
    assert _Event.log == [] and clock.finish(wait=True) is None
    assert clock.timings() == {"preprocess": 0.0, "model": 0.0, "tail": 0.0, "total": 0.0}


def test_cuda_options_refused_on_the_cpu(seg):
    with pytest.raises(ValueError, match="cuda_graph"):
        Segmenter(seg.model, cuda_graph=True)
    with pytest.raises(ValueError, match="stream"):
        seg.predict(image(8, 8), stream=object())
    with pytest.raises(ValueError, match="stream"):
        next(seg.stream(iter([image(8, 8)]), stream=object()))


def test_frame_path_source_has_no_hidden_waits():
    """Static check of cuda_frames.py: none of the calls that make the host wait for the device
    (.item, .tolist, .cpu, .numpy, torch.cuda.synchronize, blocking copies), and event waits only
    where the outputs are read back (Clock.finish) or the user reads pending timings."""
    tree = ast.parse(inspect.getsource(cuda_frames))
    waits, calls = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls.append(ast.unparse(node.func))
            if node.func.attr == "synchronize":
                waits.append(node)
        if isinstance(node, ast.keyword) and node.arg == "non_blocking":
            assert ast.unparse(node.value) == "True"
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.empty":
            # host buffers (no device given) are page-locked on CUDA: asynchronous copies need that
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            assert "device" in keywords or keywords.get("pin_memory") == "self.on_cuda", ast.unparse(node)
    assert not [c for c in calls if c.split(".")[-1] in ("item", "tolist", "cpu", "numpy")]
    assert "torch.cuda.synchronize" not in calls
    owners = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
              for w in waits if any(n is w for n in ast.walk(f))}
    assert owners == {"finish", "_resolve"} and len(waits) == 2


def test_warmup_runs_both_tails_from_device_and_host(seg, monkeypatch):
    s = Segmenter(seg.model, runtime="torch")
    s._frames = CudaFrames(s)
    calls = []
    run = s._frames.run
    monkeypatch.setattr(s._frames, "run", lambda batch, confidence, loop, stream, fmt: calls.append(
        (tuple(batch.shape), confidence)) or run(batch, confidence, loop, stream, fmt))
    assert len(s.warmup([(30, 40)], batch=2)) == 1
    assert calls == [((2, 3, 30, 40), False), ((2, 3, 30, 40), True), ((2, 3, 30, 40), False)]


class _FakeStream:
    def __init__(self, device):
        self.device = torch.device(device)


def test_device_guard_and_the_callers_stream(seg, monkeypatch):
    """On CUDA every kernel of a call runs under the Segmenter's device guard, on the stream given,
    else on that device's current stream; a stream of another device is refused (torch.cuda mocked)."""
    entered = []

    def recorder(kind):
        @contextlib.contextmanager
        def enter(arg):
            entered.append((kind, arg))
            yield
        return enter

    current = _FakeStream("cuda:0")
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    monkeypatch.setattr(torch.cuda, "device", recorder("device"))
    monkeypatch.setattr(torch.cuda, "stream", recorder("stream"))
    fr = CudaFrames(seg)
    fr.on_cuda, fr.device = True, torch.device("cuda:0")
    with fr._device_stream(None) as s:
        assert s is current
    given = _FakeStream("cuda:0")
    with fr._device_stream(given) as s:
        assert s is given
    assert entered == [("device", fr.device), ("stream", current), ("device", fr.device), ("stream", given)]
    with pytest.raises(ValueError, match="cuda:1"):
        with fr._device_stream(_FakeStream("cuda:1")):
            pass
