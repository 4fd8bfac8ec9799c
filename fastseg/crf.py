"""Fully connected CRF (Kraehenbuehl and Koltun 2011) as post-processing for segmentation.

    crf = fastseg.crf.DenseCRF()                 # pydensecrf's usual parameters, 5 iterations
    probs = crf(image, probs)                    # image uint8 [H,W,3] or [N,H,W,3]; probs [C,H,W] or [N,C,H,W]
    probs, labels = crf(image, probs, return_labels=True)

It computes what pydensecrf computes for

    d = DenseCRF2D(W, H, C); d.setUnaryEnergy(unary_from_softmax(probs))
    d.addPairwiseGaussian(sxy=3, compat=3); d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    Q = d.inference(5)

(the same permutohedral lattice, symmetric normalisation, Potts compatibility and mean field), in
C++ on the CPU (multi-threaded, whole batches in one call) and in CUDA for CUDA tensors. Beyond
pydensecrf: any number of image channels (`srgb` per channel, e.g. RGB plus depth), extra pairwise
terms over arbitrary per-pixel features (`PairwiseTerm`), logits in, float16 in, numpy or torch (or
CuPy) in and the same kind out, read-only and non-contiguous inputs.

Memory (CPU, one image of N = H*W pixels, C labels padded to Cp = 8*ceil(C/8)): 4*Cp bytes per pixel
for the unary plus, per pairwise term with d feature dimensions, 12*(d+1) bytes per pixel for its
lattice and about (12*Cp + 8*(d+1)) bytes per lattice vertex (at most N*(d+1) vertices; natural images
have far fewer). `DenseCRF.memory_bound(H, W, C)` gives the worst case in bytes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _native
from ._arrays import from_torch, to_torch
from ._device_memory import TorchDeviceMemory

__all__ = ["DenseCRF", "PairwiseTerm"]

ROUNDINGS = ("half_even", "ties_down")  # members of fastseg._C.Rounding


@dataclass(frozen=True)
class PairwiseTerm:
    """A Gaussian pairwise term exp(-|f_i - f_j|^2 / 2) with Potts weight `compat`, over the features

        f = (x / sxy, y / sxy, features[..., 0] / sdev[0], ..., features[..., K-1] / sdev[K-1])

    `features` is [H,W,K] (one image, shared by a batch) or [N,H,W,K], uint8 or floating point; the
    positions are left out when `sxy` is None. pydensecrf's bilateral kernel is
    PairwiseTerm(rgb_image, sdev=13, sxy=80, compat=10); a depth-aware one could be
    PairwiseTerm(np.dstack([rgb, depth_m]), sdev=(13, 13, 13, 0.3), sxy=80, compat=10).
    """

    features: Any
    sdev: float | Sequence[float] = 1.0
    sxy: float | Sequence[float] | None = None
    compat: float = 1.0


def _pair(v, name: str) -> tuple[float, float]:
    sx, sy = (v, v) if np.isscalar(v) else tuple(v)
    for s in (sx, sy):
        if not (math.isfinite(float(s)) and float(s) > 0):
            raise ValueError(f"{name} must be positive and finite, got {v!r}")
    return float(sx), float(sy)


class DenseCRF:
    """Mean-field inference in a fully connected CRF with Gaussian and bilateral Potts terms.

    Parameters mean what they mean in pydensecrf: `sxy_*` are the position standard deviations in
    pixels (a number or an (x, y) pair), `srgb_bilateral` the colour standard deviation (a number or
    one per image channel), `compat_*` the Potts weights; a compat of 0 leaves that term out.
    `rounding` picks pydensecrf's remainder-0 rounding: "half_even" (its SSE build, the default on
    x86) or "ties_down" (its scalar build).
    """

    def __init__(self, n_iter: int = 5, sxy_gaussian=3, compat_gaussian: float = 3, sxy_bilateral=80,
                 srgb_bilateral=13, compat_bilateral: float = 10, rounding: str = "half_even"):
        if int(n_iter) != n_iter or n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        self.n_iter = int(n_iter)
        self.sxy_gaussian = _pair(sxy_gaussian, "sxy_gaussian")
        self.compat_gaussian = float(compat_gaussian)
        self.sxy_bilateral = _pair(sxy_bilateral, "sxy_bilateral")
        self.srgb_bilateral = srgb_bilateral
        self.compat_bilateral = float(compat_bilateral)
        self.rounding = rounding

    def __repr__(self) -> str:
        return (f"DenseCRF(n_iter={self.n_iter}, sxy_gaussian={self.sxy_gaussian}, "
                f"compat_gaussian={self.compat_gaussian}, sxy_bilateral={self.sxy_bilateral}, "
                f"srgb_bilateral={self.srgb_bilateral}, compat_bilateral={self.compat_bilateral})")

    # ------------------------------------------------------------------------------------------
    def __call__(self, image, probs, *, logits: bool = False, return_labels: bool = False,
                 pairwise: Sequence[PairwiseTerm] = (), _atomic_splat: bool = False,
                 _reference_lattice: bool = False):
        """Refined probabilities [C,H,W] or [N,C,H,W] (same array kind and float dtype as `probs`).

        image: uint8 (or float) [H,W,K] or [N,H,W,K] (K = 3 for RGB; any K with one srgb per
            channel), or None for the Gaussian term alone.
        probs: probabilities (float32/float16/bfloat16, >= 0; clipped to [1e-5, 1] and logged like
            pydensecrf.utils.unary_from_softmax) or, with logits=True, unnormalised log-probabilities.
        return_labels: also return the argmax labels, uint8 [H,W] or [N,H,W].
        pairwise: extra PairwiseTerm's, applied after the Gaussian and bilateral terms.
        (_atomic_splat and _reference_lattice run the CUDA build's splat and lattice location code on
        the CPU, for the tests.)
        """
        p, kind = to_torch(probs, "probs")
        if p.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise TypeError(f"probs: expected a floating-point array, got {p.dtype}")
        if p.dim() not in (3, 4):
            raise ValueError(f"probs: expected [C,H,W] or [N,C,H,W], got shape {tuple(p.shape)}")
        single = p.dim() == 3
        p4 = p.unsqueeze(0) if single else p
        n, c, h, w = p4.shape
        if n == 0:
            raise ValueError("probs: empty batch")
        if h == 0 or w == 0:
            raise ValueError(f"probs: empty image {h}x{w}")
        if not 1 <= c <= 256:
            raise ValueError(f"probs: the number of labels must be in [1, 256], got {c}")
        out_dtype = p.dtype
        p4 = p4.float() if p4.dtype != torch.float32 else p4

        ext = _native.ext()
        keep = []  # tensors that must stay alive during the native call
        terms = []
        if self.compat_gaussian != 0:
            sx, sy = self.sxy_gaussian
            terms.append(ext.CrfTerm(use_xy=True, sx=sx, sy=sy, compat=self.compat_gaussian))
        if image is not None and self.compat_bilateral != 0:
            terms.append(self._term(image, self.srgb_bilateral, self.sxy_bilateral, self.compat_bilateral,
                                    "image", n, h, w, p4.device, keep))
        for i, t in enumerate(pairwise):
            if not isinstance(t, PairwiseTerm):
                raise TypeError(f"pairwise[{i}]: expected a PairwiseTerm, got {type(t).__name__}")
            if t.compat == 0:
                continue
            sxy = None if t.sxy is None else _pair(t.sxy, f"pairwise[{i}].sxy")
            terms.append(self._term(t.features, t.sdev, sxy, float(t.compat), f"pairwise[{i}].features",
                                    n, h, w, p4.device, keep))

        out = torch.empty((n, c, h, w), dtype=torch.float32, device=p4.device)
        labels = torch.empty((n, h, w), dtype=torch.uint8, device=p4.device) if return_labels else None
        args = (_native.buf(p4), bool(logits), terms, self.n_iter, _native.buf(out),
                None if labels is None else _native.buf(labels), getattr(ext.Rounding, self.rounding))
        if p4.device.type == "cuda":
            if not _native.has_cuda():
                raise RuntimeError("DenseCRF: probs are CUDA tensors but fastseg._C was built without CUDA "
                                   "(no nvcc at build time); move them to the CPU or rebuild with FASTSEG_CUDA=on")
            stream = torch.cuda.current_stream(p4.device)
            memory = TorchDeviceMemory(p4.device, stream)
            with torch.cuda.device(p4.device):
                ext.densecrf(*args, cuda_stream=stream.cuda_stream, device_allocate=memory.allocate,
                             device_release=memory.release)
        elif p4.device.type == "cpu":
            ext.densecrf(*args, num_threads=_native.num_threads(), atomic_splat=bool(_atomic_splat),
                         reference_lattice=bool(_reference_lattice))
        else:
            raise ValueError(f"DenseCRF: unsupported device {p4.device}")
        del keep

        if out_dtype != torch.float32:
            out = out.to(out_dtype)
        if single:
            out = out[0]
            labels = None if labels is None else labels[0]
        result = from_torch(out, kind)
        return (result, from_torch(labels, kind)) if return_labels else result

    @staticmethod
    def _term(features, sdev, sxy, compat, name, n, h, w, device, keep):
        f, _ = to_torch(features, name)
        if f.dim() == 3:
            f = f.unsqueeze(0).expand(n, *f.shape)  # one image for the whole batch (stride 0, no copy)
        if f.dim() != 4:
            raise ValueError(f"{name}: expected [H,W,K] or [N,H,W,K], got shape {tuple(features.shape)}")
        if f.shape[0] != n or f.shape[1] != h or f.shape[2] != w:
            raise ValueError(f"{name}: shape {tuple(f.shape)} does not match probs (N={n}, H={h}, W={w})")
        if f.device != device:
            raise ValueError(f"{name}: on {f.device}, but probs are on {device}")
        k = f.shape[3]
        if f.is_floating_point():
            f = f.float() if f.dtype != torch.float32 else f  # the kernels read uint8 or float32 features
        elif f.dtype != torch.uint8:
            raise TypeError(f"{name}: expected uint8 or floating-point values, got {f.dtype}")
        sd = [float(sdev)] * k if np.isscalar(sdev) else [float(s) for s in sdev]
        if len(sd) != k:
            raise ValueError(f"{name}: {k} channels but {len(sd)} standard deviations")
        for s in sd:
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"{name}: standard deviations must be positive and finite, got {sdev!r}")
        if k + (2 if sxy else 0) > 16:
            raise ValueError(f"{name}: at most 16 feature dimensions (positions included), got {k}")
        keep.append(f)
        sx, sy = sxy if sxy else (1.0, 1.0)
        return _native.ext().CrfTerm(use_xy=sxy is not None, sx=sx, sy=sy, features=_native.buf(f), divisors=sd,
                                     compat=compat)

    # ------------------------------------------------------------------------------------------
    def memory_bound(self, height: int, width: int, num_labels: int, image_channels: int = 3) -> int:
        """Worst-case bytes the CPU path allocates per image (each thread holds one image at a time)."""
        dims = []
        if self.compat_gaussian != 0:
            dims.append(2)
        if self.compat_bilateral != 0:
            dims.append(2 + image_channels)
        return int(_native.ext().densecrf_bytes(height, width, num_labels, dims))

    def reference(self, image, probs, *, logits: bool = False):
        """The same computation by pydensecrf (pip install pydensecrf2), one image: probs [C,H,W] -> Q [C,H,W].

        For tests and benchmarks; float32 numpy in and out.
        """
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax

        probs = np.asarray(probs, dtype=np.float32)
        c, h, w = probs.shape
        d = dcrf.DenseCRF2D(w, h, c)
        if logits:
            unary = np.ascontiguousarray(-probs.reshape(c, -1))
        else:
            unary = np.ascontiguousarray(unary_from_softmax(probs))
        d.setUnaryEnergy(unary)
        if self.compat_gaussian != 0:
            d.addPairwiseGaussian(sxy=self.sxy_gaussian, compat=self.compat_gaussian)
        if image is not None and self.compat_bilateral != 0:
            d.addPairwiseBilateral(sxy=self.sxy_bilateral, srgb=self.srgb_bilateral,
                                   rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=self.compat_bilateral)
        return np.array(d.inference(self.n_iter), dtype=np.float32).reshape(c, h, w)
