"""Fused ops: each module holds its plain-PyTorch reference and its backend dispatch.

`upsample_argmax`, `confusion_matrix` and `atrous_conv` are exported as functions (DESIGN.md's
contract); the ASPP op lives in `fastseg.ops.aspp` with its parameter type.
"""
from .atrous_conv import atrous_conv  # noqa: F401
from .confusion_matrix import confusion_matrix  # noqa: F401
from .upsample_argmax import upsample_argmax  # noqa: F401
