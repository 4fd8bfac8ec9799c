"""`fastseg.Segmenter`: images in, a label per pixel out, as fast as the device allows.

    seg = fastseg.Segmenter()            # the packaged default model (CamVid, 11 classes)
    seg = fastseg.Segmenter("lraspp_mobilenet_v3_large", num_classes=21)   # or a model, or a saved file
    result = seg.predict(image)          # uint8 HWC numpy / PIL / list of those / torch [N,3,H,W]
    result.labels, result.confidence, result.timings
    for result in seg.stream(frames): ...                                    # video: buffers reused

Pipeline, one stage per method: preprocess (uint8 -> normalised float in the model's layout and
precision, written once into a buffer), model (`forward_logits`: logits at the model's output
stride; optionally tiled and / or test-time augmented), tail (`fastseg.ops.upsample_argmax`: the
bilinear upsample fused with the argmax, so full-resolution logits never exist), crf (optional,
on the upsampled probabilities).

Runtimes for the model stage (`runtime=`):
  "torch"        the fused eager model (`fastseg.models.fuse`), channels_last on the CPU.
  "inductor"     the same under torch.compile with frozen weights (Inductor constant-folds the
                 parameters into the kernels); `compile=True` means this. Compiles once per size.
  "onnxruntime"  `forward_logits` exported to ONNX and run by ONNX Runtime (fp32, CPU), with
                 fastseg's own fused tail after it.
  "auto"         on the CPU for fp32: torch for a dilated ResNet (DeepLabV3, FCN, DeepLabV3+ on
                 ResNets: fastseg's Winograd convolutions serve their 3x3 convs, see below),
                 onnxruntime for the rest when it is installed; torch otherwise.
Why torch for dilated ResNets. Their multiplies are mostly in 3x3 convolutions at stride 8 / 16,
which the fused torch model runs as Winograd F(4x4) / F(6x6) (fastseg.ops.winograd: 2-2.4x fewer
multiplies in practice), with each bottleneck's last 1x1 conv, residual add and ReLU as one oneDNN
call writing into the residual's memory. Measured interleaved on DeepLabV3-ResNet50 at 512x1024
(benchmarks/bench_models.py, quiet machine): torch runtime 2.14 s, ONNX Runtime on the same model
2.90 s, torchvision 3.52 s.
Why onnxruntime is the CPU default otherwise. On the CPU the model stage is convolution-bound, and on
these 2-core x86 machines ONNX Runtime's convolutions (NCHWc blocked layout, activations fused
into the convolution, pre-packed weights) beat everything torch offers for the same fused model:
measured interleaved on LR-ASPP MobileNetV3-Large at 512x1024 the model stage ran about 2.5x faster
than eager torch in channels_last (NCHW is slower still) and Inductor with frozen weights was no
better than eager. What ONNX Runtime does badly is the tail (a Resize
to full resolution, then ArgMax over the materialised [N,C,H,W] logits), and fastseg's fused
upsample+argmax does it in a few milliseconds; so the convolutions run in ORT and the tail is ours.
Two details matter. ORT's workers spin between the operators of one run (ORT's own default,
`ort_spinning=True`) and stop spinning when the run returns (session.force_spinning_stop): two
spinning thread pools on two cores, ORT's and any other, cost whole scheduler time slices. Measured on LR-ASPP at 512x1024 on a quiet machine
(2026-11-29), Segmenter.predict: spinning and stopping 60-64 ms, spinning on between runs 87-108
ms (the preprocessing, normally 0.6 ms, took 24), asleep 85 ms. On a machine shared with other
work the spinning steals the other processes' cores: measured earlier on a busy machine (load ~3.5
on 2 cores), 537 ms spinning vs 352 ms asleep; pass `ort_spinning=False` there.
The same holds the other way round: torch's OpenMP workers spin for about 5 ms after each parallel
region, and an ORT run started inside that window took 57.5 ms instead of 51.4 (2026-11-30). So
around ORT the preprocessing (fastseg.ops.normalize, one pass) and the tail run on threads that
end with each call (`fastseg._native.own_threads`), and predict leaves no pool spinning behind:
53.5 ms instead of 60.7.
On a GPU, or for fp16 / bf16, the runtime is torch (the Triton kernels live there).

Inputs (`predict` / `stream`):
  numpy uint8 [H,W,3] (one image) or [N,H,W,3] (a batch), RGB;
  PIL images (converted to RGB);
  torch uint8 [N,3,H,W] / [3,H,W] in [0, 255], or float [N,3,H,W] / [3,H,W] RGB in [0, 1]
  (not yet normalised: the model's mean / std are applied inside);
  a list (or tuple) of any of the single-image forms, of different sizes.
Labels come back with the input's structure and kind: one image -> [H,W], a batch -> [N,H,W],
a list -> a list of [H,W]; numpy for numpy / PIL inputs, torch (on the input's device) for torch.
Labels are uint8 when the model has at most 256 classes, int64 otherwise.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _native, _torch_compat
from .ops import winograd
from .ops.normalize import normalize_image
from .ops.upsample_argmax import upsample_argmax

__all__ = ["Segmenter", "SegmentationResult"]

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RUNTIMES = ("auto", "torch", "inductor", "onnxruntime")


@dataclass
class SegmentationResult:
    """labels: with the input's structure and kind; confidence: the maximum class probability per
    pixel (float32, same structure), when asked for; timings: seconds per stage for this call."""

    labels: Any
    confidence: Any = None
    timings: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- the fused tail
# ----------------------------------------------------------------------------- inputs
@dataclass
class _Group:
    """Images of one size, run together: `images` is uint8 [n,H,W,3] (hwc, from numpy / PIL; a view
    when possible) or torch uint8 / float [n,3,H,W]; `indices` are their places in the input."""

    indices: list
    images: torch.Tensor
    hwc: bool

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3] if self.hwc else self.images.shape[2:])


@dataclass
class _Split:
    groups: list          # of _Group
    structure: str        # "single" (one image), "batch" (an array of images) or "list"
    kinds: list           # per image: "numpy" or "torch"
    devices: list         # per image: the torch input's device (None for numpy)


def _from_numpy(x: np.ndarray) -> torch.Tensor:
    if any(st < 0 for st in x.strides):  # torch cannot view negative strides (e.g. img[:, ::-1])
        x = np.ascontiguousarray(x)
    with warnings.catch_warnings():  # read-only arrays are fine: inputs are only read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(x)


def _check_torch_dtype(x: torch.Tensor, where: str) -> None:
    if x.dtype != torch.uint8 and x.dtype not in PRECISIONS.values():
        raise TypeError(f"{where}: torch images must be uint8 (0-255) or float16/bfloat16/float32 (0-1), "
                        f"got {x.dtype}")


def _single_image(x, where: str):
    """One image: (tensor, hwc, kind, device)."""
    if type(x).__module__.startswith("PIL."):
        return _from_numpy(np.asarray(x.convert("RGB"))), True, "numpy", None
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise TypeError(f"{where}: numpy images must be uint8 [H,W,3], got dtype {x.dtype}")
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"{where}: expected a uint8 RGB image [H,W,3], got shape {x.shape}")
        _check_not_empty(x.shape[:2], where)
        return _from_numpy(x), True, "numpy", None
    if isinstance(x, torch.Tensor):
        _check_torch_dtype(x, where)
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(f"{where}: expected a torch image [3,H,W], got shape {tuple(x.shape)}")
        _check_not_empty(x.shape[1:], where)
        return x, False, "torch", x.device
    raise TypeError(f"{where}: expected a numpy uint8 [H,W,3] array, a PIL image or a torch [3,H,W] "
                    f"tensor, got {type(x).__name__}")


def _check_not_empty(hw, where: str) -> None:
    if min(hw) < 1:
        raise ValueError(f"{where}: empty image (size {tuple(hw)})")


def _split(batch) -> _Split:
    if isinstance(batch, (list, tuple)):
        if len(batch) == 0:
            raise ValueError("batch: empty list of images")
        images = [_single_image(x, f"batch[{i}]") for i, x in enumerate(batch)]
        groups: dict = {}
        for i, (t, hwc, _, dev) in enumerate(images):
            size = tuple(t.shape[:2] if hwc else t.shape[1:])
            groups.setdefault((size, t.dtype, hwc, dev), []).append(i)
        runs = [_Group(idx, torch.stack([images[i][0] for i in idx]), key[2]) for key, idx in groups.items()]
        return _Split(runs, "list", [im[2] for im in images], [im[3] for im in images])
    four_d = (isinstance(batch, np.ndarray) and batch.ndim == 4) or (isinstance(batch, torch.Tensor) and batch.dim() == 4)
    if not four_d:
        t, hwc, kind, dev = _single_image(batch, "batch")
        return _Split([_Group([0], t[None], hwc)], "single", [kind], [dev])
    if isinstance(batch, np.ndarray):
        if batch.dtype != np.uint8:
            raise TypeError(f"batch: numpy images must be uint8, got dtype {batch.dtype}")
        if batch.shape[3] != 3:
            raise ValueError(f"batch: expected uint8 [N,H,W,3] (RGB), got shape {batch.shape}")
        t, hwc, kind, dev = _from_numpy(batch), True, "numpy", None
    else:
        _check_torch_dtype(batch, "batch")
        if batch.shape[1] != 3:
            raise ValueError(f"batch: expected a torch tensor [N,3,H,W], got shape {tuple(batch.shape)}")
        t, hwc, kind, dev = batch, False, "torch", batch.device
    if t.shape[0] == 0:
        raise ValueError(f"batch: empty batch (N = 0), shape {tuple(t.shape)}")
    _check_not_empty(t.shape[1:3] if hwc else t.shape[2:], "batch")
    n = t.shape[0]
    return _Split([_Group(list(range(n)), t, hwc)], "batch", [kind] * n, [dev] * n)


# ----------------------------------------------------------------------------- the segmenter
class Segmenter:
    """Segment images with a fastseg model: preprocess, model, fused tail, optional CRF.

    model_or_name: a fastseg model (`fastseg.models.create`, `from_torchvision`, ...), a registered
        name (then `num_classes` and any other model arguments are passed to `create`; the weights
        are random), the path of a file written by `fastseg.models.save`, or the name of a model
        packaged with fastseg (`fastseg.models.pretrained.names()`). None (the default) is the
        packaged default model, trained on CamVid.
    device: "cpu", "cuda", "cuda:1", a torch.device.
    precision: "fp32", "fp16" or "bf16". Reduced precision needs hardware support: CUDA (bf16 on
        GPUs that have it), or a CPU whose oneDNN has native bf16 / fp16 kernels (AVX512-BF16, AMX,
        AVX512-FP16). Elsewhere it is an error, because it would be emulated and far slower than
        fp32; `allow_emulated_precision=True` runs it anyway (for testing the numerics).
    crf: a `fastseg.crf.DenseCRF` applied to the upsampled class probabilities as a last stage.
    runtime: "auto", "torch", "inductor" or "onnxruntime" (see the module docstring).
    channels_last: the model's memory layout (default: True on the CPU for torch / inductor).
    compile: True means runtime="inductor" (torch.compile with frozen weights).
    tile: (h, w) runs each image as overlapping tiles of that size (rounded up to the model's
        output stride) when the image is larger than one tile, blending the low-resolution logits
        (a tent window: tile centres count more than their edges). Memory is bounded by `tile_batch`
        tiles of activations plus one low-resolution logits map per image.
    overlap: the fraction of a tile shared with its neighbour (0 <= overlap < 1).
    tta_flip / tta_scales: test-time augmentation. Each scale s runs the image resized by s (and,
        with tta_flip, also mirrored); the class probabilities (tta_average="softmax") or the logits
        ("logits") are averaged at the low resolution of scale 1, and the fused tail runs once on the
        average (for softmax, on its logarithm, so the confidence is the averaged probability).
    ort_spinning: let ONNX Runtime's idle threads spin between calls (its own default). Faster on a
        machine whose cores serve the segmenter, much slower on a busy one: False makes them sleep
        (see the module note).
    pad_to: pad images (bottom / right, with the mean colour) to a multiple of this, run, crop the
        labels. 1 (the default) runs every image at its own size, which all zoo models accept and
        which gives exactly the source model's answer; tiling always pads to the output stride.
    """

    def __init__(self, model_or_name=None, device="cpu", precision: str = "fp32", crf=None, *,
                 num_classes: int | None = None, runtime: str = "auto", channels_last: bool | None = None,
                 compile: bool = False, tile: Sequence[int] | None = None, overlap: float = 1 / 3,
                 tile_batch: int = 1, tta_flip: bool = False, tta_scales: Sequence[float] = (1.0,),
                 tta_average: str = "softmax", pad_to: int = 1, allow_emulated_precision: bool = False,
                 ort_spinning: bool = True, **model_kwargs):
        from .models import fuse

        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but CUDA is not available")
        self.precision = _check_precision(precision, self.device, allow_emulated_precision)
        self.dtype = PRECISIONS[self.precision]
        model = fuse(_resolve_model(model_or_name, num_classes, model_kwargs))
        self.runtime = _choose_runtime(runtime, compile, self.device, self.precision, model)
        self.model = model.to(self.device)
        self.output_stride = int(getattr(self.model, "output_stride", 1))
        self.align_corners = bool(getattr(self.model, "align_corners", False))
        self.channels_last = (self.device.type == "cpu" and self.runtime != "onnxruntime") \
            if channels_last is None else bool(channels_last)
        if self.runtime == "onnxruntime" and self.channels_last:
            raise ValueError("channels_last: ONNX Runtime takes NCHW input (it picks its own layout inside)")
        if self.runtime != "onnxruntime":
            self.model = self.model.to(self.dtype)
            if self.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)

        mean = torch.tensor(self.model.mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(self.model.std, dtype=torch.float32, device=self.device)
        # x_norm = x_uint8 * scale - shift  (one multiply and one subtract per element)
        self._scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1)
        self._shift = (mean / std).reshape(1, 3, 1, 1)

        if crf is not None and not callable(crf):
            raise TypeError(f"crf: expected a fastseg.crf.DenseCRF, got {type(crf).__name__}")
        self.crf = crf
        self.tile = _check_tile(tile, self.output_stride)
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap: must be in [0, 1), got {overlap!r}")
        self.overlap = float(overlap)
        if int(tile_batch) != tile_batch or tile_batch < 1:
            raise ValueError(f"tile_batch: must be a positive integer, got {tile_batch!r}")
        self.tile_batch = int(tile_batch)
        self.tta_flip = bool(tta_flip)
        self.tta_scales = tuple(float(s) for s in tta_scales)
        if not self.tta_scales or any(not (s > 0 and math.isfinite(s)) for s in self.tta_scales):
            raise ValueError(f"tta_scales: expected positive scales, got {tta_scales!r}")
        if tta_average not in ("softmax", "logits"):
            raise ValueError(f"tta_average: expected 'softmax' or 'logits', got {tta_average!r}")
        self.tta_average = tta_average
        if int(pad_to) != pad_to or pad_to < 1:
            raise ValueError(f"pad_to: must be a positive integer, got {pad_to!r}")
        self.pad_to = int(pad_to)
        self.ort_spinning = bool(ort_spinning)

        self._forward = self._build_runtime()
        self._buffers: dict = {}  # (shape, layout) -> preprocessed input, reused by stream()

    # ------------------------------------------------------------------------- public
    @torch.inference_mode()
    def predict(self, batch, return_confidence: bool = False) -> SegmentationResult:
        """Labels for `batch` (see the module docstring for the accepted forms)."""
        return self._run(batch, return_confidence, reuse=False)

    def stream(self, frames: Iterable, return_confidence: bool = False) -> Iterator[SegmentationResult]:
        """`predict` for each frame of a video loop. The input buffer (the normalised float image) and the
        labels / confidence arrays are reused from frame to frame while the frame size stays the same:
        each result's arrays are overwritten by the next frame (copy them to keep them)."""
        outputs: dict = {}
        for frame in frames:
            with torch.inference_mode():
                result = self._run(frame, return_confidence, reuse=True)
            key = _shape_key(result.labels)
            held = outputs.get(key)
            if held is None:
                outputs.clear()  # a new frame size: the old arrays are no longer needed
                outputs[key] = (result.labels, result.confidence)
            else:
                _copy_into(held[0], result.labels)
                if return_confidence:
                    _copy_into(held[1], result.confidence)
                result.labels, result.confidence = held[0], held[1] if return_confidence else None
            yield result

    # ------------------------------------------------------------------------- stages
    def _run(self, batch, return_confidence: bool, reuse: bool) -> SegmentationResult:
        timings = {"preprocess": 0.0, "model": 0.0, "tail": 0.0}
        if self.crf is not None:
            timings["crf"] = 0.0
        # next to ONNX Runtime, fastseg's kernels run on threads that end with each call (_native.own_threads)
        quiet = _native.own_threads() if self.runtime == "onnxruntime" else contextlib.nullcontext()
        with quiet:
            return self._run_groups(batch, return_confidence, reuse, timings)

    def _run_groups(self, batch, return_confidence: bool, reuse: bool, timings: dict) -> SegmentationResult:
        start = time.perf_counter()
        split = _split(batch)
        outputs = []  # per group: (labels [n,H,W], confidence [n,H,W] or None)
        for group in split.groups:
            t0 = time.perf_counter()
            x = self.preprocess(group.images, group.hwc, reuse)
            t1 = self._sync()
            logits, padded = self.logits(x)
            t2 = self._sync()
            H, W = group.size
            if self.crf is None:
                out = upsample_argmax(logits, size=tuple(padded), align_corners=self.align_corners,
                                      return_confidence=return_confidence)
                labels, conf = out if return_confidence else (out, None)
                if (H, W) != padded:
                    labels, conf = labels[:, :H, :W], (None if conf is None else conf[:, :H, :W])
                t3 = self._sync()
            else:
                z = F.interpolate(logits.float(), size=padded, mode="bilinear",
                                  align_corners=self.align_corners)[:, :, :H, :W]
                t3 = self._sync()
                probs, labels = self.crf(_as_uint8_hwc(group), z.contiguous(), logits=True, return_labels=True)
                conf = probs.amax(1) if return_confidence else None
                timings["crf"] += self._sync() - t3
            timings["preprocess"] += t1 - t0
            timings["model"] += t2 - t1
            timings["tail"] += t3 - t2
            outputs.append((labels, conf))
        result = SegmentationResult(_restore(split, [o[0] for o in outputs]), None, timings)
        if return_confidence:
            result.confidence = _restore(split, [o[1] for o in outputs])
        timings["total"] = time.perf_counter() - start
        return result

    def preprocess(self, images: torch.Tensor, hwc: bool, reuse: bool = False) -> torch.Tensor:
        """uint8 [N,H,W,3] (hwc) or uint8 / float [N,3,H,W] -> normalised [N,3,H,W] in the model's dtype
        and layout, on the device: on the CPU in float32, one pass of fastseg.ops.normalize; otherwise
        one converting copy plus one in-place multiply-subtract."""
        if hwc:
            images = images.permute(0, 3, 1, 2)  # a view with channels_last strides
        n, _, h, w = images.shape
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        dtype = self.dtype if self.runtime != "onnxruntime" else torch.float32
        key = (n, h, w, dtype, fmt)
        x = self._buffers.get(key) if reuse else None
        if x is None:
            x = torch.empty((n, 3, h, w), dtype=dtype, device=self.device, memory_format=fmt)
            if reuse:
                self._buffers.clear()
                self._buffers[key] = x
        if images.dtype == torch.uint8 and dtype == torch.float32 and x.device.type == "cpu":
            return normalize_image(images, self._scale, self._shift, out=x)
        x.copy_(images)
        scale = self._scale if images.dtype == torch.uint8 else self._scale * 255.0  # float input is in [0, 1]
        x.mul_(scale.to(dtype)).sub_(self._shift.to(dtype))
        return x

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Low-resolution logits of the normalised batch, and the (padded) size they map to."""
        n, _, h, w = x.shape
        if self.tile is not None and (h > self.tile[0] or w > self.tile[1]):
            return self._tiled_logits(x)
        multiple = self.output_stride if self.tile is not None else self.pad_to
        x = _pad(x, multiple)
        return self._tta_logits(x), tuple(x.shape[2:])

    # ------------------------------------------------------------------------- model stage
    def _build_runtime(self):
        if self.runtime == "onnxruntime":
            return _OrtLogits(self.model, self.ort_spinning)
        fn = self.model.forward_logits
        if self.runtime == "inductor":
            # freezing: parameters become constants, so Inductor folds and pre-packs them (oneDNN
            # weight layouts on the CPU) instead of reading them as inputs on every call.
            fn = torch.compile(fn, options={"freezing": True})
        return fn

    def _tta_logits(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tta_flip and self.tta_scales == (1.0,):
            return self._forward(x)
        h, w = x.shape[2:]
        base = None
        acc = None
        count = 0
        # the scale-1 logits size is the common grid (or ceil(size / stride) when 1 is not a scale)
        order = sorted(self.tta_scales, key=lambda s: s != 1.0)
        for s in order:
            xs = x if s == 1.0 else F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))),
                                                  mode="bilinear", align_corners=False)
            for flip in ((False, True) if self.tta_flip else (False,)):
                z = self._forward(xs.flip(3) if flip else xs)
                z = z.flip(3) if flip else z
                if base is None:
                    base = tuple(z.shape[2:]) if s == 1.0 else \
                        (math.ceil(h / self.output_stride), math.ceil(w / self.output_stride))
                if tuple(z.shape[2:]) != base:
                    z = F.interpolate(z.float(), size=base, mode="bilinear", align_corners=self.align_corners)
                z = z.float()
                z = torch.softmax(z, 1) if self.tta_average == "softmax" else z
                acc = z if acc is None else acc.add_(z)
                count += 1
        acc.div_(count)
        if self.tta_average == "softmax":
            acc = acc.clamp_min_(1e-12).log_()
        return acc

    def _tiled_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Overlapping tiles, logits blended at the low resolution with a tent window."""
        s, (th, tw) = self.output_stride, self.tile
        x = _pad(x, s, minimum=(th, tw))
        n, _, H, W = x.shape
        rows, cols = _tile_starts(H, th, self.overlap, s), _tile_starts(W, tw, self.overlap, s)
        lh, lw = th // s, tw // s
        weight = _tent(lh, x.device)[:, None] * _tent(lw, x.device)[None, :]
        outs = []
        for i in range(n):
            acc = wsum = None
            starts = [(r, c) for r in rows for c in cols]
            for k in range(0, len(starts), self.tile_batch):
                chunk = starts[k:k + self.tile_batch]
                tiles = torch.cat([x[i:i + 1, :, r:r + th, c:c + tw] for r, c in chunk])
                z = self._tta_logits(tiles).float()
                if tuple(z.shape[2:]) != (lh, lw):  # a model that rounds sizes its own way
                    z = F.interpolate(z, size=(lh, lw), mode="bilinear", align_corners=self.align_corners)
                if acc is None:
                    acc = torch.zeros((z.shape[1], H // s, W // s), dtype=torch.float32, device=x.device)
                    wsum = torch.zeros((H // s, W // s), dtype=torch.float32, device=x.device)
                for (r, c), zt in zip(chunk, z):
                    acc[:, r // s:r // s + lh, c // s:c // s + lw].addcmul_(zt, weight)
                    wsum[r // s:r // s + lh, c // s:c // s + lw].add_(weight)
            outs.append(acc.div_(wsum))
        return torch.stack(outs), (H, W)

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def __repr__(self):
        return (f"Segmenter({type(self.model).__name__}, device={self.device}, precision={self.precision}, "
                f"runtime={self.runtime}, channels_last={self.channels_last}, tile={self.tile}, "
                f"tta_flip={self.tta_flip}, tta_scales={self.tta_scales}, crf={self.crf is not None})")


# ----------------------------------------------------------------------------- ONNX Runtime stage
class _OrtLogits:
    """`forward_logits` exported to ONNX (dynamic batch and size) and run by ONNX Runtime."""

    def __init__(self, model: nn.Module, spinning: bool = True):
        import onnxruntime as ort

        from .export import export_logits_onnx

        buffer = io.BytesIO()
        export_logits_onnx(model, buffer)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # spinning workers answer the next operator at once, but steal the cores of anything else
        # running (see the module note on ort_spinning); and they stop when run() returns, so they
        # never spin against the preprocessing and the fused tail that run between ORT's runs
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        return torch.from_numpy(self.session.run(None, {"image": x.numpy()})[0])


# ----------------------------------------------------------------------------- helpers
def _resolve_model(model_or_name, num_classes, model_kwargs) -> nn.Module:
    from . import models
    from .models import pretrained

    if model_or_name is None:
        model_or_name = pretrained.DEFAULT
    if isinstance(model_or_name, nn.Module):
        if not hasattr(model_or_name, "forward_logits"):
            raise TypeError("model_or_name: expected a fastseg model (with forward_logits); convert other "
                            "models with fastseg.models.from_torchvision / from_smp / from_transformers")
        if num_classes is not None or model_kwargs:
            raise ValueError("num_classes and model arguments apply only when a model is named, not given")
        return model_or_name
    if isinstance(model_or_name, (str, os.PathLike)):
        if os.path.exists(model_or_name):
            if num_classes is not None or model_kwargs:
                raise ValueError("num_classes and model arguments apply only when a model is named, "
                                 "not loaded from a file")
            return models.load(model_or_name)
        name = os.fspath(model_or_name)
        if name in pretrained.names():
            if num_classes is not None or model_kwargs:
                raise ValueError(f"num_classes and model arguments do not apply to the packaged model {name!r}")
            return pretrained.load(name)
        if name not in models.list_models():
            raise ValueError(f"model_or_name: {name!r} is neither a file, a packaged model "
                             f"({', '.join(pretrained.names())}) nor a registered model "
                             f"(see fastseg.models.list_models())")
        if num_classes is None:
            raise ValueError(f"num_classes: needed to create {name!r} by name")
        return models.create(name, num_classes=num_classes, **model_kwargs)
    raise TypeError(f"model_or_name: expected a fastseg model, a model name or a file path, "
                    f"got {type(model_or_name).__name__}")


def _check_precision(precision: str, device: torch.device, allow_emulated: bool) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {tuple(PRECISIONS)}, got {precision!r}")
    if precision == "fp32" or allow_emulated:
        return precision
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision: bf16 is not supported by {torch.cuda.get_device_name(device)}")
        return precision
    if device.type == "cpu":
        supported = (_torch_compat.mkldnn_bf16_supported() if precision == "bf16"
                     else _torch_compat.mkldnn_fp16_supported())
        if not supported:
            raise ValueError(f"precision: this CPU has no native {precision} convolutions (oneDNN reports "
                             f"none; they need AVX512-BF16 / AMX / AVX512-FP16), so {precision} would be "
                             f"emulated and slower than fp32. Use fp32, or allow_emulated_precision=True.")
        return precision
    raise ValueError(f"precision: {precision} on {device.type} is not supported")


def _winograd_backbone(model: nn.Module) -> bool:
    """True for a fused model with dilated dense 3x3 convolutions that Winograd serves (a dilated
    ResNet: DeepLabV3, FCN, DeepLabV3+ on ResNets), whose multiplies are mostly in those convolutions."""
    from .models.rewrite import AtrousConv

    return any(isinstance(m, AtrousConv) and winograd.geometry_serves(
        m.conv.kernel_size, m.conv.stride, m.conv.padding, m.conv.dilation, m.conv.groups, m.act_name,
        m.conv.in_channels, m.conv.out_channels) for m in model.modules())


def _choose_runtime(runtime: str, compile: bool, device: torch.device, precision: str,
                    model: nn.Module) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime: expected one of {RUNTIMES}, got {runtime!r}")
    if compile:
        if runtime == "onnxruntime":
            raise ValueError("compile=True is torch.compile: it does not apply to runtime='onnxruntime'")
        return "inductor"
    if runtime == "onnxruntime":
        if device.type != "cpu":
            raise ValueError("runtime: 'onnxruntime' is fastseg's CPU runtime; use 'torch' on CUDA")
        if precision != "fp32":
            raise ValueError(f"precision: runtime 'onnxruntime' runs fp32 only, got {precision}")
        import onnxruntime  # noqa: F401  (a clear ImportError when it is missing)
    if runtime != "auto":
        return runtime
    if device.type == "cpu" and precision == "fp32" and not _winograd_backbone(model):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "torch"
        return "onnxruntime"
    return "torch"


def _check_tile(tile, stride: int):
    if tile is None:
        return None
    try:
        th, tw = (int(v) for v in tile)
    except (TypeError, ValueError):
        raise TypeError(f"tile: expected (height, width), got {tile!r}") from None
    if th < 1 or tw < 1:
        raise ValueError(f"tile: must be positive, got {tile!r}")
    return (-(-th // stride) * stride, -(-tw // stride) * stride)


def _tile_starts(size: int, tile: int, overlap: float, stride: int) -> list[int]:
    """Tile offsets along one axis, multiples of the stride, the last tile flush with the end."""
    if size <= tile:
        return [0]
    step = max(stride, int(tile * (1 - overlap)) // stride * stride)
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def _tent(n: int, device) -> torch.Tensor:
    """Blending weights along one tile axis: highest in the middle, small but non-zero at the edges."""
    i = torch.arange(n, dtype=torch.float32, device=device)
    return torch.minimum(i + 1, n - i) / ((n + 1) // 2)


def _pad(x: torch.Tensor, multiple: int, minimum=(1, 1)) -> torch.Tensor:
    """Pad bottom / right with zeros (the mean colour, after normalisation) to a multiple and a minimum."""
    h, w = x.shape[2:]
    ph = max(-(-h // multiple) * multiple, minimum[0]) - h
    pw = max(-(-w // multiple) * multiple, minimum[1]) - w
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph))


def _as_uint8_hwc(group: _Group) -> torch.Tensor:
    """The image the CRF's bilateral term compares colours in: uint8 [N,H,W,3], contiguous."""
    images = group.images
    if group.hwc:
        return images.contiguous()
    if images.dtype != torch.uint8:
        images = (images.float() * 255).round_().clamp_(0, 255).to(torch.uint8)
    return images.permute(0, 2, 3, 1).contiguous()


def _restore(split: _Split, per_group: list):
    """Per-group [n,H,W] outputs back into the caller's structure and array kinds."""
    def as_kind(t, kind, device):
        if kind == "numpy":
            return t.cpu().numpy()
        return t if device is None else t.to(device)

    if split.structure != "list":  # one group holds the whole input
        t = per_group[0][0] if split.structure == "single" else per_group[0]
        return as_kind(t, split.kinds[0], split.devices[0])
    out = [None] * len(split.kinds)
    for group, t in zip(split.groups, per_group):
        for j, i in enumerate(group.indices):
            out[i] = as_kind(t[j], split.kinds[i], split.devices[i])
    return out


def _shape_key(x):
    if isinstance(x, list):
        return tuple((tuple(t.shape), str(t.dtype)) for t in x)
    return tuple(x.shape), str(x.dtype)


def _copy_into(dst, src) -> None:
    if isinstance(dst, list):
        for d, s in zip(dst, src):
            _copy_into(d, s)
    elif isinstance(dst, np.ndarray):
        np.copyto(dst, src)
    else:
        dst.copy_(src)
