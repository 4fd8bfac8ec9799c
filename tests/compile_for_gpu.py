"""Compile a fastseg Triton kernel for a real NVIDIA target without a GPU (ahead of time, no driver).

The interpreter checks the kernels' arithmetic; this checks that the very same source also lowers to
PTX and through ptxas for sm_80 / sm_90 (tile shapes, dtypes, dynamic loop bounds), so the GPU path
cannot rot on machines without a GPU. Run in a subprocess: TRITON_INTERPRET must be off at import.

    python tests/compile_for_gpu.py fastseg.ops.atrous_conv.triton_kernel:_atrous_conv_kernel fp16 80 \
        HAS_BIAS=1 ACT=1 UPCAST=0 PRECISION=ieee BLOCK_M=128 BLOCK_N=64 BLOCK_K=32 num_warps=8 num_stages=3
Constants are ints, or strings where they are not numbers; num_warps / num_stages are compile options.
Prints the PTX instruction that did the dot products ("mma" for tensor cores, "fma" otherwise).
"""
import importlib
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

DATA_POINTERS = ("x_ptr", "w_ptr", "out_ptr")  # in the operand dtype; bias / confidence fp32, tables int32/int64


def main(target: str, dtype: str, arch: str, *constants: str) -> None:
    module, name = target.split(":")
    fn = getattr(importlib.import_module(module), name)
    values = {k: int(v) if v.lstrip("-").isdigit() else v for k, v in (c.split("=") for c in constants)}
    options = {k: values.pop(k) for k in ("num_warps", "num_stages") if k in values}
    constexprs = values
    signature = {}
    for arg in fn.arg_names:
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif arg in DATA_POINTERS:
            signature[arg] = "*" + dtype
        elif arg in ("bias_ptr", "conf_ptr"):
            signature[arg] = "*fp32"
        elif arg == "woff_ptr":
            signature[arg] = "*i64"
        elif arg.endswith("_ptr"):
            signature[arg] = "*i32"
        elif arg.startswith("scale"):
            signature[arg] = "fp32"
        else:
            signature[arg] = "i32"
    kernel = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", int(arch), 32),
                            options=options)
    ptx = kernel.asm["ptx"]
    print("mma" if "mma" in ptx else "fma", len(kernel.asm["cubin"]))


if __name__ == "__main__":
    main(*sys.argv[1:])
