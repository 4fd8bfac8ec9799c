"""Fused ops: each module holds its plain-PyTorch reference and its backend dispatch."""
from .upsample_argmax import upsample_argmax  # noqa: F401
