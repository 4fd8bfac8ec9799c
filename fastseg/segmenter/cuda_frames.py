"""The Segmenter on a CUDA device, run as a real-time loop needs it.

A frame costs the host one wait: the readback of its labels (none at all when the input is a CUDA
tensor, whose labels stay on the device with an event that says when they are ready). Everything
else is queued on the caller's stream (`stream=`, else the current stream of the Segmenter's device):

- upload: a host frame is copied once into page-locked staging memory and sent with
  `non_blocking=True` as it is (uint8: one byte per pixel and channel over PCIe);
- preprocessing on the device: an RGB frame that runs at its own size is normalised by one
  pointwise kernel that reads the uint8 frame through its HWC view and writes the runtime's dtype
  and layout (`normalise`), one rounding; a frame resized towards the model's scale
  (`fastseg.segmenter.scale`) or in another pixel format (BGR, NV12, YUYV) is converted, resized
  (antialiased, as the CPU's `resize_normalize`) and normalised into the same buffer by torch
  kernels that never wait (`fastseg.ops.resize_normalize.device`);
- the network and the fused tail, which upsamples the logits straight to the frame's own size, then
  the readback into page-locked memory;
- timings from CUDA events recorded between the stages, read after the frame's one wait (or when
  `result.timings` is first read, for labels left on the device).

With `cuda_graph=True` a stream loop captures preprocessing, network and tail once per frame size
(after one run outside the capture, which compiles and autotunes what it needs) and replays the
graph for every later frame; the upload and readback stay outside it, as copies into and out of
the graph's own buffers.

The buffers a loop reuses (staging, device input, normalised input, readback, graphs) belong to
that loop (`FrameLoop`), so a Segmenter stays shareable between threads (ARCHITECTURE.md, P10).
On the CPU the same code runs with ordinary memory, host clocks and a replay that re-runs the
stages: tests use that as a stand-in for the device.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..ops.resize_normalize import RGB, PixelFormat
from ..ops.resize_normalize.device import normalise, resize_normalize_into
from . import inputs
from .mru_cache import MruCache
from .scale import tail_size

__all__ = ["CudaFrames", "FrameLoop", "normalise"]


class CudaFrames:
    """How one Segmenter runs frames on its device. Holds only constants (no per-call state)."""

    def __init__(self, seg, cuda_graph: bool = False):
        self.seg = seg
        device = seg.device
        self.on_cuda = device.type == "cuda"
        if self.on_cuda and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.cuda_graph = bool(cuda_graph)
        self.scale = seg._scale                  # float32 [1,3,1,1] on the device
        self.unit_scale = seg._scale * 255.0     # for float input in [0, 1]
        self.neg_shift = -seg._shift
        if self.on_cuda:
            # cuDNN times its algorithms once per convolution shape and keeps the fastest; the first
            # frame of each size pays for that (Segmenter.warmup moves it out of the loop)
            torch.backends.cudnn.benchmark = True

    # ----------------------------------------------------------------------------- public
    def normalise(self, images: torch.Tensor, out: torch.Tensor, pixel_format: PixelFormat = RGB) -> torch.Tensor:
        """images (uint8 in [0, 255], or RGB / BGR float in [0, 1]; RGB / BGR [N,3,H,W], NV12, YUYV)
        converted, resized to out's size and normalised into `out`."""
        if images.device != out.device:
            images = images.to(out.device)
        scale = self.scale if images.dtype == torch.uint8 else self.unit_scale
        return resize_normalize_into(images, pixel_format, scale, self.neg_shift, out)

    def warm(self, frame: torch.Tensor) -> None:
        """Pay a frame size's first-call costs: a uint8 frame on the device through both tails (the
        Triton kernels compile per variant and size, cuDNN times its algorithms per shape), then from
        the host (page-locked buffers, which torch's host allocator keeps for later requests)."""
        for confidence in (False, True):
            self.seg.predict(frame, return_confidence=confidence, pixel_format=RGB)
        self.seg.predict(torch.zeros(frame.shape, dtype=frame.dtype), pixel_format=RGB)

    def run(self, batch, return_confidence: bool, loop: FrameLoop | None, stream=None,
            pixel_format: PixelFormat = RGB):
        """One call of predict (loop None) or one frame of a stream loop: a SegmentationResult."""
        from .pipeline import SegmentationResult

        loop = loop if loop is not None else FrameLoop(graphs=False)
        stages = ("preprocess", "model", "tail") + (("crf",) if self.seg.crf is not None else ())
        with self._device_stream(stream) as s:
            clock = Clock(s, stages)
            parts = inputs.split(batch, pixel_format)
            outputs = [self._group(group, return_confidence, loop, clock) for group in parts.groups]
            labels = inputs.restore(parts, [o[0] for o in outputs])
            confidence = inputs.restore(parts, [o[1] for o in outputs]) if return_confidence else None
            # host outputs were read back: their frame's one wait; device outputs: nothing waits
            host = any(g.images.device.type == "cpu" for g in parts.groups)
            ready = clock.finish(wait=host)
        return SegmentationResult(labels, confidence, clock.timings(), ready=ready)

    # ----------------------------------------------------------------------------- stages
    def _group(self, group: inputs.Group, return_confidence: bool, loop: FrameLoop, clock: Clock):
        seg = self.seg
        n, size, fmt = len(group.indices), group.size, group.pixel_format
        host = group.images.device.type == "cpu"
        # the input's device too: groups of one call never share a slot (nor its readback buffers)
        key = (tuple(group.images.shape), group.hwc, fmt, group.images.dtype, str(group.images.device),
               return_confidence)
        slot = loop.slot(key, lambda: self._new_slot(group.images, n, seg.scaling.network_size(*size), host,
                                                     loop.graphs))
        src = self._upload(group.images, slot, host, static=loop.graphs)
        if loop.graphs:
            if slot.graph is None:
                slot.graph = capture(lambda: self._stages(slot.device_input, group, slot.x, return_confidence,
                                                          _no_mark), self.on_cuda)
            clock.mark("preprocess")  # the upload
            slot.graph.replay()
            outs = slot.graph.outputs
            clock.mark("model")       # normalise, network and tail, replayed as one graph
        else:
            outs = self._stages(src, group, slot.x, return_confidence, clock.mark)
        if seg.crf is not None:
            clock.mark("tail")
            images = inputs.Group(group.indices, src, group.hwc, fmt).as_uint8_hwc()  # already on the device
            outs = seg._refine(images, outs[0], return_confidence)
        if host:
            outs = self._read_back(outs, slot)
        clock.mark("crf" if seg.crf is not None else "tail")
        return outs

    def _stages(self, src: torch.Tensor, group: inputs.Group, x: torch.Tensor, return_confidence: bool,
                mark: Callable[[str], None]) -> tuple:
        """Preprocess (into x, at the network's size), network, tail to the frame's own size: (labels,
        confidence or None), or (upsampled logits,) for a CRF."""
        seg = self.seg
        x = self.normalise(src.permute(0, 3, 1, 2) if group.hwc else src, x, group.pixel_format)
        mark("preprocess")
        logits, padded = seg.logits(x)
        mark("model")
        size = group.size
        full = tail_size(size, tuple(x.shape[2:]), padded)  # the logits straight to the frame's own size
        if seg.crf is not None:
            return (seg._crf_input(logits, full, size),)
        return seg._labels(logits, full, size, return_confidence)

    def _new_slot(self, images: torch.Tensor, n: int, size: tuple[int, int], host: bool, graphs: bool) -> Slot:
        """Buffers for frames like `images`, normalised into an input of the network's `size`."""
        staging = torch.empty(images.shape, dtype=images.dtype, pin_memory=self.on_cuda) if host else None
        # an eager frame already on this device is read where it is
        copied = host or graphs or images.device != self.device
        device_input = torch.empty(images.shape, dtype=images.dtype, device=self.device) if copied else None
        return Slot(staging, device_input, self.seg.input_buffer(n, *size))

    def _upload(self, images: torch.Tensor, slot: Slot, host: bool, static: bool) -> torch.Tensor:
        """The frame on the device: a host frame through page-locked staging (one host pass, then an
        asynchronous copy); a device frame as it is, or copied into the graph's input buffer."""
        if host:
            slot.staging.copy_(images)
            return slot.device_input.copy_(slot.staging, non_blocking=True)
        if static or images.device != self.device:
            return slot.device_input.copy_(images, non_blocking=True)
        return images

    def _read_back(self, outs: tuple, slot: Slot) -> tuple:
        """Device outputs copied (asynchronously) into the slot's page-locked host buffers."""
        if not slot.host_out:
            slot.host_out = [None if t is None else torch.empty(t.shape, dtype=t.dtype, pin_memory=self.on_cuda)
                             for t in outs]
        for h, t in zip(slot.host_out, outs):
            if t is not None:
                h.copy_(t, non_blocking=True)
        return tuple(slot.host_out)

    @contextlib.contextmanager
    def _device_stream(self, stream) -> Iterator[Any]:
        """The device guard and the stream every kernel of the call is queued on."""
        if not self.on_cuda:
            if stream is not None:
                raise ValueError(f"stream: CUDA streams are for a CUDA Segmenter; this one runs on {self.device}")
            yield None
            return
        if stream is None:
            stream = torch.cuda.current_stream(self.device)
        elif stream.device != self.device:
            raise ValueError(f"stream: a stream of {stream.device}, but the Segmenter runs on {self.device}")
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            yield stream


@dataclass
class Slot:
    """One frame shape's buffers in a loop."""
    staging: torch.Tensor | None      # page-locked copy of a host frame
    device_input: torch.Tensor | None  # the frame copied to the device (the graph's input)
    x: torch.Tensor                   # the normalised input
    graph: Any = None                 # the captured stages (cuda_graph=True)
    host_out: list = field(default_factory=list)  # page-locked readback buffers


class FrameLoop:
    """The buffers (and graphs) one stream loop reuses, by frame shape: kept for the latest shapes
    only (a list input of several sizes needs one slot per size)."""

    KEEP = 4

    def __init__(self, graphs: bool):
        self.graphs = bool(graphs)
        self._slots: MruCache[Slot] = MruCache(self.KEEP)

    def slot(self, key, make: Callable[[], Slot]) -> Slot:
        return self._slots.get(key, make)


# ----------------------------------------------------------------------------- graphs
class _CudaReplay:
    def __init__(self, graph, outputs):
        self.graph, self.outputs = graph, outputs

    def replay(self) -> None:
        self.graph.replay()


class _HostReplay:
    """The CPU stand-in for a graph: static outputs refreshed by running the stages again."""

    def __init__(self, fn: Callable[[], tuple]):
        self.fn, self.outputs = fn, fn()

    def replay(self) -> None:
        for static, fresh in zip(self.outputs, self.fn()):
            if static is not None:
                static.copy_(fresh)


def capture(fn: Callable[[], tuple], on_cuda: bool):
    """`fn` (which reads and writes only tensors that outlive it) as a replayable graph whose
    `outputs` are the tensors the captured run returned, rewritten by each `replay()`."""
    if not on_cuda:
        return _HostReplay(fn)
    # one run off the capture first, on a side stream: Triton compiles, cuDNN chooses, allocators
    # warm up there, since a capture fails on anything that waits for the device
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # on a stream of this device (torch's default capture stream is one per process); other threads'
    # CUDA calls stay legal meanwhile, since several loops may run on one Segmenter at once
    try:
        context = torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local")
    except TypeError:  # torch before 2.1: no capture_error_mode
        context = torch.cuda.graph(graph, stream=side)
    with context:
        outputs = fn()
    return _CudaReplay(graph, outputs)


# ----------------------------------------------------------------------------- timings
def _no_mark(stage: str) -> None:
    pass


def capturing() -> bool:
    """True while the current CUDA stream is being captured into a graph."""
    return torch.cuda.is_current_stream_capturing()


class Clock:
    """Per-stage times of one call: CUDA events on `stream` (None: host clock, for the CPU stand-in).
    mark(stage) ends `stage` (time since the previous mark counts to it). No event is recorded while
    the stream is being captured into a graph: a captured call has no timings."""

    def __init__(self, stream, stages: tuple[str, ...], event=None):
        self.stream, self.stages = stream, stages
        self._event = event if event is not None else (torch.cuda.Event if stream is not None else None)
        self.active = stream is None or not capturing()
        self.marks: list = []
        self._done = False
        self.mark("")

    def mark(self, stage: str) -> None:
        if not self.active:
            return
        if self._event is None:
            self.marks.append((stage, time.perf_counter()))
            return
        e = self._event(enable_timing=True)
        e.record(self.stream)
        self.marks.append((stage, e))

    def finish(self, wait: bool):
        """The event after the call's last stage (None on the host or in a capture); waited for when
        `wait` (outputs read back to the host: the frame's one synchronisation)."""
        if self._event is None or not self.active:
            return None
        last = self.marks[-1][1]
        if wait:
            last.synchronize()
            self._done = True
        return last

    def timings(self) -> Mapping:
        """Seconds per stage and "total"; for events not yet waited for, computed on first reading."""
        if self._event is None or not self.active or self._done:
            return self._seconds()
        return _PendingTimings(self)

    def _seconds(self) -> dict:
        out = dict.fromkeys(self.stages, 0.0)
        for (_, a), (stage, b) in zip(self.marks, self.marks[1:]):
            out[stage] += (b - a) if self._event is None else a.elapsed_time(b) / 1e3
        out["total"] = sum(out.values())
        return out


class _PendingTimings(Mapping):
    """Timings of labels left on the device: nothing waits for them until they are read."""

    def __init__(self, clock: Clock):
        self._clock, self._values = clock, None

    def _resolve(self) -> dict:
        if self._values is None:
            self._clock.marks[-1][1].synchronize()
            self._values = self._clock._seconds()
        return self._values

    def __getitem__(self, key):
        return self._resolve()[key]

    def __iter__(self):
        return iter(self._resolve())

    def __len__(self):
        return len(self._resolve())

    def __repr__(self):
        return repr(self._resolve())
