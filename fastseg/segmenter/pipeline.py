"""`Segmenter`: images in, a label per pixel out, as fast as the device allows.

Stages, one call each: preprocess (uint8 -> the normalised float the runtime takes, written once;
none for a runtime that takes the uint8 frames and normalises them inside its network),
the network (`Runtime.__call__`, optionally composed with tiling and / or test-time augmentation),
the tail (`fastseg.ops.upsample_argmax`: the bilinear upsample fused with the argmax, so
full-resolution logits never exist), and an optional CRF on the upsampled probabilities.

A Segmenter holds no state that a call changes: every buffer a call needs is its own, and the
buffers a video loop reuses belong to that loop (`stream`), so threads may share one Segmenter.
"""
from __future__ import annotations

import contextlib
import functools
import numbers
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .. import ops
from ..models.config import input_size
from ..ops.resize_normalize import RGB, PixelFormat, parse
from . import inputs
from .augment import pad, tiled_logits, tta_logits
from .budget import DEFAULT_MAX_PIXELS, automatic_tiling, check_max_pixels, images_per_call
from .choice import PRECISIONS, choose_runtime
from .cuda_frames import CudaFrames, FrameLoop
from .input_checks import check_device
from .model_spec import resolve_model
from .mru_cache import MruCache
from .options import TTA, Tiling
from .precision import choose_precision
from .scale import Scaling, tail_size
from .stream import FrameStream

__all__ = ["Segmenter", "SegmentationResult"]

# old flat keyword arguments, and what replaced them
_REPLACED = {
    "tile": "tiling=Tiling(size=(h, w))", "overlap": "tiling=Tiling(size, overlap=...)",
    "tile_batch": "tiling=Tiling(size, batch=...)", "tta_flip": "tta=TTA(flip=True)",
    "tta_scales": "tta=TTA(scales=...)", "tta_average": "tta=TTA(average=...)",
    "compile": "runtime='inductor'",
}


@dataclass
class SegmentationResult:
    """labels: with the input's structure and kind; confidence: the maximum class probability per
    pixel (float32, same structure), when asked for; timings: seconds per stage for this call (on
    CUDA from events on the stream); ready: on CUDA, the event after which the outputs are written
    (labels of CUDA tensors stay on the device and nothing waits for them: wait for this event, or
    use them on the same stream). From `stream`: frame, the frame itself (as the source gave it);
    timestamp, its capture time; latency, its age when the labels came out (seconds, on the
    stream's clock)."""

    labels: Any
    confidence: Any = None
    timings: Mapping = field(default_factory=dict)
    ready: Any = None
    timestamp: float | None = None
    latency: float | None = None
    frame: Any = None


class Segmenter:
    """Segment images with a fastseg model: preprocess, network, fused tail, optional CRF.

    model_or_name: a fastseg model (`fastseg.models.create`, `from_torchvision`, ...), the path of a
        file written by `fastseg.models.save`, the name of a model packaged with fastseg
        (`fastseg.models.pretrained.names()`), or a registered architecture name with `num_classes`
        (random weights). None (the default) is the packaged default model, trained on CamVid.
    device: "cpu", "cuda", "cuda:1", a torch.device.
    precision: "fp32", "fp16", "bf16", "int8" or "auto". Reduced precision needs hardware support: CUDA (bf16 on
        GPUs that have it), or a CPU whose oneDNN has native bf16 / fp16 kernels (AVX512-BF16, AMX,
        AVX512-FP16). Elsewhere it is an error, because it would be emulated and far slower than
        fp32; `allow_emulated_precision=True` runs it anyway (for testing the numerics). "int8" runs a
        graph written by `fastseg quantize` (or the packaged model's). "auto" picks bf16 where it was
        measured faster with labels kept (`fastseg.segmenter.precision`); `self.precision` is the
        choice and `self.precision_reason` says why.
    crf: a `fastseg.crf.DenseCRF` applied to the upsampled class probabilities as a last stage.
    runtime: "auto", "torch", "inductor", "onnxruntime" or "openvino" (`fastseg.segmenter.choice` says which
        "auto" picks and why). The built runtime is `self.runtime` (its `.name` is the choice).
    channels_last: the torch runtimes' input layout (default: True).
    tiling: a `Tiling` (sliding-window inference for large images), or None.
    tta: a `TTA` (test-time augmentation: flips and scales), or None.
    pad_to: pad images (bottom / right, with the mean colour) to a multiple of this, run, crop the
        labels. 1 (the default) runs every image at its own size, which all zoo models accept and
        which gives exactly the source model's answer; tiling always pads to the output stride.
    ort_spinning: let ONNX Runtime's idle workers spin between the operators of a run (its own
        default): faster when the segmenter has the cores to itself, much slower on a machine busy
        with other work, whose cores the spinning takes; False makes them sleep.
    scale, size: the size images run through the network at (`fastseg.segmenter.scale`). By default
        a model that knows its training image size (the packaged one: 480x360) gets each image
        resized so its short side matches (aspect ratio kept, antialiased when shrinking); others
        run images as they are. `scale=0.5` halves each side (`scale=1`: as they are), `size=512`
        sets the short side, `size=(h, w)` the exact size. Labels always come back at each image's
        own size.
    pixel_format: what the images hold: "rgb" (the default), "bgr", "nv12" or "yuyv"
        (`fastseg.ops.resize_normalize.pixel_formats`: shapes, BT.601 limited range unless e.g.
        "nv12:bt709:full" says otherwise); converted inside the preprocessing pass. `predict` and
        `stream` take it too, for one call.
    max_pixels: the most pixels one network call runs on (`fastseg.segmenter.budget`): larger
        batches run a few images at a time, larger images as tiles (unless `tiling` is given).
        Default 4096 x 4096; None runs everything whole, whatever its size.
    cuda_graph: on CUDA, each `stream` loop captures preprocessing, network and tail as a CUDA graph
        on the first frame of each size and replays it for the next ones (for fixed-size streams).

    On CUDA a frame waits for the device once, to read its labels back (`fastseg.segmenter.cuda_frames`);
    `predict` and `stream` take `stream=`, the CUDA stream to queue the work on (default: the current one).
    """

    def __init__(self, model_or_name=None, device="cpu", precision: str = "fp32", crf=None, *,
                 num_classes: int | None = None, runtime: str = "auto", channels_last: bool | None = None,
                 tiling: Tiling | None = None, tta: TTA | None = None, pad_to: int = 1,
                 allow_emulated_precision: bool = False, ort_spinning: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, cuda_graph: bool = False,
                 scale: float | None = None, size: int | tuple[int, int] | None = None,
                 pixel_format: str | PixelFormat = "rgb", **unexpected):
        _reject(unexpected)
        self.device = check_device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but CUDA is not available")
        resolved = resolve_model(model_or_name, num_classes)
        # the training size of the model asked for (an int8 graph made from it runs at the same scale)
        self.scaling = Scaling.of(scale, size, input_size(resolved.model))
        model, self.precision, self.precision_reason = choose_precision(
            precision, resolved, self.device, runtime, allow_emulated_precision)
        self.dtype = PRECISIONS.get(self.precision, torch.float32)  # int8 graphs take fp32 input
        if tiling is not None and not isinstance(tiling, Tiling):
            raise TypeError(f"tiling: expected fastseg.segmenter.Tiling(size=(h, w), ...), got {tiling!r}")
        if tta is not None and not isinstance(tta, TTA):
            raise TypeError(f"tta: expected fastseg.segmenter.TTA(flip=..., scales=...), got {tta!r}")
        if crf is not None and not callable(crf):
            raise TypeError(f"crf: expected a fastseg.crf.DenseCRF, got {type(crf).__name__}")
        if int(pad_to) != pad_to or pad_to < 1:
            raise ValueError(f"pad_to: must be a positive integer, got {pad_to!r}")
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph: CUDA graphs need a CUDA device, got {self.device}")

        self.pixel_format = parse(pixel_format)
        self.runtime = choose_runtime(runtime, model, self.device, self.precision,
                                      channels_last=channels_last, ort_spinning=ort_spinning)
        # the model the network stage runs (fused, in the runtime's dtype and layout), or for a runtime
        # that runs a graph of its own, the model that graph was made from
        self.model = getattr(self.runtime, "model", model)
        self.output_stride = int(getattr(model, "output_stride", 1))
        self.align_corners = bool(getattr(model, "align_corners", False))
        self.crf = crf
        self.pad_to = int(pad_to)
        self.max_pixels = check_max_pixels(max_pixels)
        self.tiling = None if tiling is None else tiling.rounded(self.output_stride)
        self.tta = tta if tta is not None and tta.active else None

        mean = torch.tensor(model.mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(model.std, dtype=torch.float32, device=self.device)
        # x_norm = x_uint8 * scale - shift  (one multiply and one subtract per element)
        self._scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1)
        self._shift = (mean / std).reshape(1, 3, 1, 1)
        self._network = self.runtime if self.tta is None else functools.partial(
            tta_logits, self.runtime, tta=self.tta, stride=self.output_stride, align_corners=self.align_corners)
        self._frames = CudaFrames(self, cuda_graph) if self.device.type == "cuda" else None

    # ------------------------------------------------------------------------- public
    def predict(self, batch, return_confidence: bool = False, pixel_format=None, *,
                stream=None) -> SegmentationResult:
        """Labels for `batch` (see `fastseg.segmenter.inputs` for the accepted forms)."""
        fmt = self.pixel_format if pixel_format is None else parse(pixel_format)
        with torch.inference_mode(), self.runtime.kernel_threads():
            if self._frames is not None:
                return self._frames.run(batch, return_confidence, None, stream, fmt)
            with _generic_stream(stream, self.device):
                return self._run(batch, return_confidence, None, fmt)

    def stream(self, frames: Iterable | str, return_confidence: bool = False, pixel_format=None, *,
               live: bool = False, clock=time.perf_counter, prefetch: bool = False, stream=None) -> FrameStream:
        """`predict` for each frame of a video loop; returns a `FrameStream` (iterate it).

        frames: an iterable of frames or of (timestamp, frame) pairs, a `fastseg.video.VideoReader`,
            or the name of a video file, camera (0, /dev/video0) or stream URL (decoded by PyAV).
        pixel_format: what the frames hold, for this loop (default: the Segmenter's).
        live: read the source on a thread of its own and always segment the newest frame, dropping
            the ones that arrived meanwhile (counted in the stream's `dropped`); a file is then
            played at its own frame rate. Offline (the default) every frame is segmented. A source
            decoded in this process wants a Segmenter built with `ort_spinning=False`
            (`fastseg.segmenter.stream`).
        clock: the clock of the timestamps; each result's `latency` is `clock() - timestamp`.
        prefetch: decode a video file's next frame on a thread of its own while the network runs
            (pays where the network leaves cores idle; `fastseg.segmenter.stream`).
        stream: on CUDA, the CUDA stream to queue the work on (default: the current one).

        The input buffer (the normalised float image) and the labels / confidence arrays belong to
        this loop and are reused from frame to frame while the frame size stays the same: each
        result's arrays are overwritten by the next frame (copy them to keep them). Several loops
        may run on one Segmenter at once, from any threads (`fastseg.segmenter.stream`)."""
        fmt = self.pixel_format if pixel_format is None else parse(pixel_format)
        if self._frames is not None:  # on CUDA the loop's buffers are a FrameLoop
            loop = FrameLoop(graphs=self._frames.cuda_graph)

            def run_on_device(frame) -> SegmentationResult:
                with torch.inference_mode(), self.runtime.kernel_threads():
                    return self._frames.run(frame, return_confidence, loop, stream, fmt)

            return FrameStream(run_on_device, frames, live=live, clock=clock, prefetch=prefetch)
        queue = _generic_stream(stream, self.device)
        buffers = _InputBuffers()
        held = inputs.HeldOutputs()

        def run(frame) -> SegmentationResult:
            with torch.inference_mode(), self.runtime.kernel_threads(), queue:
                result = self._run(frame, return_confidence, buffers, fmt)
            result.labels, result.confidence = held.reuse(result.labels, result.confidence)
            return result

        return FrameStream(run, frames, live=live, clock=clock, prefetch=prefetch)

    def warmup(self, sizes: Sequence[int] | Sequence[Sequence[int]] = ((360, 480),), batch: int = 1) -> list[float]:
        """Run a frame of each (height, width) in `sizes` once, so that first-call costs (Inductor's
        compilation per size, the allocators' first requests, lazy kernel set-up; on CUDA also the
        Triton kernels' compilation, with and without confidence, and cuDNN's choice of algorithms)
        are paid now rather than on the first real frame. Returns the seconds each size took."""
        if len(sizes) == 2 and all(isinstance(v, numbers.Integral) for v in sizes):
            sizes = (sizes,)
        seconds = []
        for h, w in sizes:
            frame = torch.zeros((batch, 3, int(h), int(w)), dtype=torch.uint8, device=self.device)
            start = time.perf_counter()
            if self._frames is not None:
                self._frames.warm(frame)
            else:
                self.predict(frame, pixel_format=RGB)
            seconds.append(self.runtime.sync() - start)
        return seconds

    def preprocess(self, images: torch.Tensor, hwc: bool, out: torch.Tensor | None = None,
                   size: tuple[int, int] | None = None, pixel_format: PixelFormat = RGB) -> torch.Tensor:
        """uint8 [N,H,W,3] (hwc) or uint8 / float [N,3,H,W] (or NV12 / YUYV frames) -> normalised
        [N,3,h,w] in the runtime's dtype and layout, on the device, at `size` (default: the images'
        own), written into `out` when given (from `input_buffer`): on the CPU in float32, one pass of
        a native kernel (`normalize_image`, or `resize_normalize` to resize or convert); otherwise one
        converting copy plus one in-place multiply-subtract (on CUDA torch kernels writing `out` once,
        `cuda_frames`)."""
        if hwc:
            images = images.permute(0, 3, 1, 2)  # a view with channels_last strides
        own = pixel_format.image_size(tuple(images.shape))
        size = own if size is None else tuple(size)
        if out is None:
            out = self.input_buffer(images.shape[0], *size)
        if self._frames is not None:
            return self._frames.normalise(images, out, pixel_format)
        if size != own or pixel_format.name != "rgb":
            return self._resize_normalize(images, size, pixel_format, out)
        if images.dtype == torch.uint8 and out.dtype == torch.float32 and out.device.type == "cpu":
            return ops.normalize_image(images, self._scale, self._shift, out=out)
        out.copy_(images)
        dtype = out.dtype
        scale = self._scale if images.dtype == torch.uint8 else self._scale * 255.0  # float input is in [0, 1]
        return out.mul_(scale.to(dtype)).sub_(self._shift.to(dtype))

    def _resize_normalize(self, images, size, pixel_format, out):
        scale = self._scale if images.dtype == torch.uint8 else self._scale * 255.0  # float input is in [0, 1]
        if out.dtype == torch.float32 and out.device == images.device:
            return ops.resize_normalize(images, size, scale, self._shift, pixel_format, out=out)
        return out.copy_(ops.resize_normalize(images, size, scale.to(images.device), self._shift.to(images.device),
                                              pixel_format))

    def input_buffer(self, n: int, h: int, w: int) -> torch.Tensor:
        """An uninitialised normalised-input batch in the runtime's dtype and layout."""
        return torch.empty((n, 3, h, w), dtype=self.runtime.dtype, device=self.device,
                           memory_format=self.runtime.memory_format)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Low-resolution logits of the normalised batch, and the (padded) size they map to."""
        n, _, h, w = x.shape
        tiling = self.tiling or automatic_tiling(h, w, self.max_pixels, self.output_stride)
        if tiling is not None and (h > tiling.size[0] or w > tiling.size[1]):
            return tiled_logits(self._network, x, tiling, self.output_stride, self.align_corners)
        step = images_per_call(n, h, w, self.max_pixels)
        if step < n:  # a batch above the pixel budget: a few images per network call
            parts = [self.logits(x[i:i + step]) for i in range(0, n, step)]
            return torch.cat([p[0] for p in parts]), parts[0][1]
        x = pad(x, self.output_stride if self.tiling is not None else self.pad_to)
        return self._network(x), tuple(x.shape[2:])

    # ------------------------------------------------------------------------- stages
    def _run(self, batch, return_confidence: bool, buffers: _InputBuffers | None,
             pixel_format: PixelFormat = RGB) -> SegmentationResult:
        start = time.perf_counter()
        timings = dict.fromkeys(("preprocess", "model", "tail") + (("crf",) if self.crf is not None else ()), 0.0)
        sync = self.runtime.sync
        parts = inputs.split(batch, pixel_format)
        outputs = []  # per group: (labels [n,H,W], confidence [n,H,W] or None)
        for group in parts.groups:
            t0 = time.perf_counter()
            n, (H, W) = len(group.indices), group.size
            h, w = self.scaling.network_size(H, W)
            if self._frames_as_they_are(group, n, (h, w)):
                # the runtime normalises the uint8 frames itself, inside its network: no pass of ours
                x = group.images
                t1 = sync()
                logits, padded = self.runtime(x), (h, w)
            else:
                out = None if buffers is None else buffers.get(self, n, h, w)
                x = self.preprocess(group.images, group.hwc, out, (h, w), group.pixel_format)
                t1 = sync()
                logits, padded = self.logits(x)
            t2 = sync()
            full = tail_size((H, W), (h, w), padded)  # the logits straight to the image's own size
            if self.crf is None:
                into = None if buffers is None or (H, W) != full else buffers.labels(logits, n, H, W)
                labels, conf = self._labels(logits, full, (H, W), return_confidence, out=into)
                t3 = sync()
            else:
                z = self._crf_input(logits, full, (H, W))
                t3 = sync()
                labels, conf = self._refine(group.as_uint8_hwc(), z, return_confidence)
                timings["crf"] += sync() - t3
            timings["preprocess"] += t1 - t0
            timings["model"] += t2 - t1
            timings["tail"] += t3 - t2
            outputs.append((labels, conf))
        result = SegmentationResult(inputs.restore(parts, [o[0] for o in outputs]), None, timings)
        if return_confidence:
            result.confidence = inputs.restore(parts, [o[1] for o in outputs])
        timings["total"] = time.perf_counter() - start
        return result

    def _frames_as_they_are(self, group: inputs.Group, n: int, size: tuple[int, int]) -> bool:
        """Whether the runtime takes this group's uint8 RGB frames [n,H,W,3] as they are
        (`Runtime.takes_uint8_hwc`): the frames whose network input is nothing but them normalised,
        at their own size and whole (no tiling, test-time augmentation, padding or split batch)."""
        images = group.images
        return (self.runtime.takes_uint8_hwc and group.hwc and images.dtype == torch.uint8
                and group.pixel_format.name == "rgb" and tuple(images.shape[1:3]) == size
                and self.tta is None and self.tiling is None and self.pad_to == 1
                and automatic_tiling(*size, self.max_pixels, self.output_stride) is None
                and images_per_call(n, *size, self.max_pixels) >= n)

    def _labels(self, logits, padded, size, return_confidence: bool, out=None):
        """The fused tail: (labels, confidence or None) [n,H,W] at `size`, cropped from `padded`
        (written into `out`, a loop's labels buffer, when given)."""
        res = ops.upsample_argmax(logits, size=tuple(padded), align_corners=self.align_corners,
                                  return_confidence=return_confidence, out=out)
        labels, conf = res if return_confidence else (res, None)
        H, W = size
        if (H, W) != tuple(padded):
            labels, conf = labels[:, :H, :W], (None if conf is None else conf[:, :H, :W])
        return labels, conf

    def _crf_input(self, logits, padded, size) -> torch.Tensor:
        """The logits upsampled to `padded` (float32), cropped to `size`: what the CRF refines."""
        H, W = size
        return F.interpolate(logits.float(), size=tuple(padded), mode="bilinear",
                             align_corners=self.align_corners)[:, :, :H, :W]

    def _refine(self, images: torch.Tensor, z: torch.Tensor, return_confidence: bool):
        """The CRF stage: (labels, confidence or None). The uint8 HWC images go where the logits are
        (a CUDA CRF reads both on the device; host frames arrive on the CPU)."""
        probs, labels = self.crf(images.to(z.device), z.contiguous(), logits=True, return_labels=True)
        return labels, (probs.amax(1) if return_confidence else None)

    def __repr__(self):
        return (f"Segmenter({type(self.model).__name__}, device={self.device}, precision={self.precision}, "
                f"runtime={self.runtime.name}, tiling={self.tiling}, tta={self.tta}, crf={self.crf is not None}, "
                f"scaling={self.scaling})")


class _InputBuffers:
    """One stream's normalised-input buffers and label buffers, by batch size and frame size: a
    video loop of one frame size writes every frame into the same ones. Kept for the latest sizes only."""

    KEEP = 8  # a list input of several sizes needs one of each per size

    def __init__(self):
        self._buffers: MruCache[torch.Tensor] = MruCache(self.KEEP)

    def get(self, seg: Segmenter, n: int, h: int, w: int) -> torch.Tensor:
        return self._buffers.get((n, h, w), lambda: seg.input_buffer(n, h, w))

    def labels(self, logits: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
        """The labels [n,h,w] of the fused tail, in its default dtype, on the logits' device."""
        dtype = torch.uint8 if logits.shape[1] <= 256 else torch.int64
        return self._buffers.get(("labels", n, h, w, dtype, logits.device),
                                 lambda: torch.empty((n, h, w), dtype=dtype, device=logits.device))


def _generic_stream(stream, device: torch.device):
    """The context the generic path runs a call in: nothing (it runs on the CPU; on CUDA every frame
    takes the frame path, `cuda_frames`), where a CUDA stream is a mistake."""
    if stream is not None:
        raise ValueError(f"stream: CUDA streams are for a CUDA Segmenter; this one runs on {device}")
    return contextlib.nullcontext()


def _reject(unexpected: dict) -> None:
    if not unexpected:
        return
    name = next(iter(unexpected))
    hint = f" (use {_REPLACED[name]})" if name in _REPLACED else ""
    raise TypeError(f"Segmenter() got an unexpected keyword argument {name!r}{hint}")

