"""Fused ops, functions only: one folder per op.

    fastseg/ops/<op>/__init__.py       the public function, its argument checks and its dispatch
    fastseg/ops/<op>/naive.py          the plain-PyTorch reference: the specification the kernels are tested against
    fastseg/ops/<op>/triton_kernel.py  the Triton kernel (CUDA tensors; CPU tensors under TRITON_INTERPRET=1)
    csrc/bindings/<op>.cpp             its binding in fastseg._C ("native"), which calls
    csrc/cpu/<op>.{h,cpp}              the C++ kernel (and csrc/cuda/<op>.{h,cu} where the op has a CUDA build)

Every op picks its backend through `_dispatch.resolve` from the `_dispatch.Op` it declares.
Activations come from the one table in `activation.py`, whose fused codes are the C++ enum
`fastseg._C.Activation`. Modules (conv + folded batch-norm + activation, fused ASPP) live in one
place only, `fastseg.models.rewrite`, and call these functions. ARCHITECTURE.md follows one op
(upsample_argmax) from here down to its C++ and Triton kernels; its P1 (held against a reference) is
why every op has a naive.py, and P9 (one home for each thing) why there is one dispatch and one table.

The Triton kernels live here beside their op rather than in a top-level `kernels/` package: one
folder then holds everything Python-side of an op, no `package_dir` remapping is needed to install
them as part of fastseg, and a kernel imports the op's helpers relatively. Nothing depends on the
old top-level location (the ahead-of-time GPU compile test names kernels by module path).

Ops: upsample_argmax, confusion_matrix, normalize (normalize_image), resize_normalize, atrous_conv, aspp,
winograd.
The functions named like their folder are exported here (`fastseg.ops.upsample_argmax(...)`);
`aspp` and `winograd` stay reachable as modules (`fastseg.ops.aspp.aspp`, `fastseg.ops.winograd.conv2d`).
"""
from .atrous_conv import atrous_conv  # noqa: F401
from .confusion_matrix import confusion_matrix  # noqa: F401
from .normalize import normalize_image  # noqa: F401
from .resize_normalize import resize_normalize  # noqa: F401
from .upsample_argmax import upsample_argmax  # noqa: F401
