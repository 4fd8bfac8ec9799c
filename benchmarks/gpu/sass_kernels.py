"""The kernels `make sass-report` counts: one entry each, built as its launcher would build it on a GPU.

An entry names the kernel, the unit of work its figure is per, how to build its cubin for an
architecture (a Triton kernel through `triton_cubin` with the launcher's own GPU tile configuration
for a representative shape; a CUDA C++ kernel through `nvcc_cubin`), the anchor opcode that marks
its hot loop, and how much work one pass over the counted region does for one thread (see
sass_count.py for the method). Adding a kernel is adding an entry to KERNELS, then
`python benchmarks/gpu/sass_report.py --update` to record its figure.

Representative shapes: upsample + argmax 1x19x128x256 fp16 logits to 1024x2048 uint8 labels; the
confusion matrix 8x1024x2048 uint8 labels with ignore_index 255, 19 and 150 classes (Cityscapes,
ADE20K); atrous conv / ASPP fp16 (and the atrous conv in fp32 on TF32 tensor cores), 256 channels in
and out, a 64x128 map at dilation 12 (the "wide" tiles of fastseg/ops/atrous_conv/tiles.py).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sass_count import Region

ROOT = Path(__file__).resolve().parents[2]
# The options of `make cuda-check` and of the CMake CUDA build.
NVCC_FLAGS = ("-std=c++17", "-O3", "--expt-relaxed-constexpr", f"-I{ROOT / 'csrc'}")

PER_PIXEL_CHANNEL = "per output pixel per channel"
PER_PIXEL = "per pixel"
PER_MAC = "per output pixel per output channel per input channel and tap"


@dataclass(frozen=True)
class Kernel:
    name: str
    unit: str
    build: Callable[[int], tuple[bytes, str]]  # arch -> (cubin, regex naming the function in it)
    anchor: str | None                         # opcode regex of the per-unit work (None: whole function)
    work: Callable[[Region], float]            # units one thread handles in one pass over the region


# ---- how much work a region does ---------------------------------------------------------------

def per_anchor(pattern: str, per_unit: float) -> Callable[[Region], float]:
    """Units = anchors in the region / anchors per unit (e.g. 4 gathers per pixel and channel)."""
    return lambda region: region.anchors(pattern) / per_unit


def fixed(units: float) -> Callable[[Region], float]:
    return lambda region: units


_HMMA = re.compile(r"HMMA\.(\d\d)(\d)(\d+)\..*")       # HMMA.16816.F32: m16 n8 k16, one warp
_HGMMA = re.compile(r"HGMMA\.(\d+)x(\d+)x(\d+)\..*")  # HGMMA.64x128x16.F32: one warpgroup


def mma_macs(region: Region) -> float:
    """Multiply-accumulates one thread's share of the tensor-core instructions in the region do."""
    macs = 0.0
    for i in region.instrs:
        if m := _HMMA.fullmatch(i.opcode):
            macs += int(m[1]) * int(m[2]) * int(m[3]) / 32
        elif m := _HGMMA.fullmatch(i.opcode):
            macs += int(m[1]) * int(m[2]) * int(m[3]) / 128
    return macs


# ---- building cubins ----------------------------------------------------------------------------

def _specialize(value) -> tuple[str, bool]:
    """(type, divisible by 16) as Triton's launcher specialises an argument value."""
    if isinstance(value, str):  # a pointer's type; torch's allocations are 256-byte aligned
        return value, True
    if isinstance(value, float):
        return "fp32", False
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    kind, key = native_specialize_impl(BaseBackend, value, False, True, True)
    return kind, key == "D"


def triton_cubin(fn, arch: int, args: dict, constexprs: dict, num_warps: int, num_stages: int = 3
                 ) -> tuple[bytes, str]:
    """Compile the @triton.jit `fn` for sm_<arch> as a launch with these argument values would
    (ints of 1 become constants, multiples of 16 and pointers are marked divisible by 16)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constants, attrs = {}, dict(constexprs), {}
    for k, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
            continue
        kind, aligned = _specialize(args[name])
        if kind == "constexpr":
            constants[name] = args[name]
        elif aligned:
            attrs[(k,)] = [["tt.divisibility", 16]]
        signature[name] = kind
    source = ASTSource(fn, signature, constants, attrs)
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": num_warps, "num_stages": num_stages})
    return kernel.asm["cubin"], "^" + re.escape(fn.__name__) + "$"


def nvcc_cubin(source: str, arch: int) -> bytes:
    """csrc/<source> compiled by nvcc to a cubin for sm_<arch>, with the build's options."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc")
    with tempfile.TemporaryDirectory(prefix="fastseg-sass-") as tmp:
        out = Path(tmp) / "k.cubin"
        run = subprocess.run([nvcc, *NVCC_FLAGS, f"-arch=sm_{arch}", "-cubin", str(ROOT / "csrc" / source),
                              "-o", str(out)], capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"nvcc -cubin {source} for sm_{arch} failed:\n{run.stderr[-3000:]}")
        return out.read_bytes()


# ---- upsample + argmax ----------------------------------------------------------------------------

_UPSAMPLE = dict(C=19, h=128, w=256, H=1024, W=2048)


def _upsample_plans():
    """The Triton launcher's runs for the representative shape: (plan along y, plan along x, tile config)."""
    from fastseg.ops.upsample_argmax import triton_kernel as k
    from fastseg.ops.upsample_argmax.cells import axis_plan

    u, cfg = _UPSAMPLE, k.tile_config("gpu")
    return axis_plan(u["h"], u["H"], False, cfg["MAX_MY"]), axis_plan(u["w"], u["W"], False, cfg["MAX_MX"]), cfg


def _upsample_triton(arch: int) -> tuple[bytes, str]:
    from fastseg.ops.upsample_argmax import triton_kernel as k
    from fastseg.ops.upsample_argmax.cells import bilinear_scale

    u = _UPSAMPLE
    py, px, cfg = _upsample_plans()
    args = dict(x_ptr="*fp16", labels_ptr="*u8", conf_ptr="*u8", C=u["C"], h=u["h"], w=u["w"], H=u["H"], W=u["W"],
                units_x=px.units, blocks_per_image=-(-py.units * px.units // cfg["BLOCK"]),
                sN=u["C"] * u["h"] * u["w"], sC=u["h"] * u["w"], sH=u["w"], sW=1,
                scale_h=bilinear_scale(u["h"], u["H"], False), scale_w=bilinear_scale(u["w"], u["W"], False),
                parts_y=py.parts, parts_x=px.parts)
    return triton_cubin(k._upsample_argmax_kernel, arch, args,
                        dict(ALIGN=False, CONF=False, CELL_Y=py.cell, CELL_X=px.cell, MY=py.m, MX=px.m,
                             BLOCK=cfg["BLOCK"]), cfg["num_warps"])


def _upsample_triton_work(region: Region) -> float:
    # 4 gathers (the taps) per channel serve a run of MY x MX output pixels
    py, px, _ = _upsample_plans()
    return region.anchors(_GATHER) / 4 * py.m * px.m


def _upsample_cuda(arch: int) -> tuple[bytes, str]:
    # fp16 logits, runs of 8 x 4 outputs (an 8x upsampling), labels only
    return nvcc_cubin("cuda/upsample_argmax.cu", arch), r"upsample_argmax_kernelINS_8HalfBitsELi8ELi4ELb0EEE"


# ---- confusion matrix ---------------------------------------------------------------------------

def _confusion_triton(num_classes: int) -> Callable[[int], tuple[bytes, str]]:
    def build(arch: int) -> tuple[bytes, str]:
        from fastseg.ops.confusion_matrix import triton_kernel as k

        plane = num_classes * num_classes + 2 + k.SPARE
        args = dict(pred_ptr="*u8", target_ptr="*u8", out_ptr="*i64", n=8 * 1024 * 2048, C=num_classes,
                    ignore_index=255, plane=plane, copies=k.copies_for(num_classes))
        constexprs = dict(HAS_IGNORE=True, TAIL=False, BLOCK=k.BLOCK, SPARE=k.SPARE)
        return triton_cubin(k._confusion_kernel, arch, args, constexprs, k.NUM_WARPS)
    return build


def _confusion_triton_work(region: Region) -> float:
    # straight-line: one program-thread counts BLOCK / (NUM_WARPS * 32) pixels
    from fastseg.ops.confusion_matrix import triton_kernel as k

    return k.BLOCK / (k.NUM_WARPS * 32)


def _confusion_cuda(arch: int) -> tuple[bytes, str]:
    # uint8 maps, shared table, contiguous (four labels a load)
    return nvcc_cubin("cuda/confusion_matrix.cu", arch), r"count_kernelIhLb1ELb1EE"


# ---- atrous convolution and ASPP --------------------------------------------------------------------

_CONV_MAP = dict(N=1, H=64, W=128, Cin=256, Cout=256)


def _conv_cfg(dtype: str = "fp16"):
    import torch

    from fastseg.ops.atrous_conv.triton_kernel import launch_config

    c = _CONV_MAP
    torch_dtype = torch.float16 if dtype == "fp16" else torch.float32
    return launch_config(torch_dtype, c["N"] * c["H"] * c["W"], c["Cin"], c["Cout"], "gpu")


def _conv_strides(c: dict, channels: int) -> dict:
    """channels_last strides of an [N, channels, H, W] tensor as (n, c, h, w)."""
    return dict(n=c["H"] * c["W"] * channels, c=1, h=c["W"] * channels, w=channels)


def _conv_args(c: dict, cfg: dict, out_channels: int, dtype: str = "fp16") -> dict:
    """The arguments the convolution launchers pass for the map `c` (channels_last in and out)."""
    xs, os_ = _conv_strides(c, c["Cin"]), _conv_strides(c, out_channels)
    cin_pad = -(-c["Cin"] // cfg["BLOCK_K"]) * cfg["BLOCK_K"]
    cols = -(-c["Cout"] // cfg["BLOCK_N"]) * cfg["BLOCK_N"]
    return dict(x_ptr="*" + dtype, w_ptr="*" + dtype, bias_ptr="*fp32", out_ptr="*" + dtype,
                M=c["N"] * c["H"] * c["W"], H=c["H"], W=c["W"], Cin=c["Cin"], cin_pad=cin_pad, w_cols16=cols // 16,
                Cout=c["Cout"], sxn=xs["n"], sxh=xs["h"], sxw=xs["w"], son=os_["n"], soc=os_["c"], soh=os_["h"],
                sow=os_["w"])


def _conv_constexprs(cfg: dict, precision: str = "ieee") -> dict:
    from fastseg.ops import activation as activations

    tiles = {key: cfg[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    return dict(ACT=activations.code("relu"), CIN_FULL=_CONV_MAP["Cin"] % cfg["BLOCK_K"] == 0, UPCAST=False,
                PRECISION=precision, **tiles)


def _atrous_triton(dtype: str) -> Callable[[int], tuple[bytes, str]]:
    """fp16, or fp32 on TF32 tensor cores (torch.backends.cudnn.allow_tf32, torch's default)."""
    def build(arch: int) -> tuple[bytes, str]:
        from fastseg.ops.atrous_conv import triton_kernel as k

        c, cfg = _CONV_MAP, _conv_cfg(dtype)
        args = dict(_conv_args(c, cfg, c["Cout"], dtype), OH=c["H"], OW=c["W"],
                    GROUP_BLOCKS=-(-c["Cout"] // cfg["BLOCK_N"]),
                    sbn=0, KH=3, KW=3, stride_h=1, stride_w=1, pad_h=12, pad_w=12, dil_h=12, dil_w=12)
        constexprs = dict(HAS_BIAS=True, TAP_BITS=True, **_conv_constexprs(cfg, "tf32" if dtype == "fp32" else "ieee"))
        return triton_cubin(k._atrous_conv_kernel, arch, args, constexprs, cfg["num_warps"], cfg["num_stages"])
    return build


def _aspp_triton(arch: int) -> tuple[bytes, str]:
    from fastseg.ops.aspp import triton_kernel as k

    c, cfg = _CONV_MAP, _conv_cfg()
    args = dict(_conv_args(c, cfg, 4 * c["Cout"]), ksize_ptr="*i32", dil_ptr="*i32", woff_ptr="*i64")
    return triton_cubin(k._aspp_branches_kernel, arch, args, _conv_constexprs(cfg),
                        cfg["num_warps"], cfg["num_stages"])


_MMA = r"H(G)?MMA\..*"
_GATHER = r"LDG\..*"

KERNELS: list[Kernel] = [
    # upsample + argmax: 4 gathers (the bilinear taps) per channel and run of output pixels
    Kernel("upsample_argmax.triton", PER_PIXEL_CHANNEL, _upsample_triton, _GATHER, _upsample_triton_work),
    Kernel("upsample_argmax.cuda", PER_PIXEL_CHANNEL, _upsample_cuda, _GATHER, per_anchor(_GATHER, 4 / (8 * 4))),

    # confusion matrix
    Kernel("confusion_matrix.triton.c19", PER_PIXEL, _confusion_triton(19), None, _confusion_triton_work),
    Kernel("confusion_matrix.triton.c150", PER_PIXEL, _confusion_triton(150), None, _confusion_triton_work),
    Kernel("confusion_matrix.cuda", PER_PIXEL, _confusion_cuda, r"ATOMS\..*", per_anchor(r"ATOMS\..*", 1)),

    # atrous convolution and ASPP: the K loop's tensor-core instructions
    Kernel("atrous_conv.triton.fp16", PER_MAC, _atrous_triton("fp16"), _MMA, mma_macs),
    Kernel("atrous_conv.triton.tf32", PER_MAC, _atrous_triton("fp32"), _MMA, mma_macs),
    Kernel("aspp.triton.fp16", PER_MAC, _aspp_triton, _MMA, mma_macs),
]
