"""winograd.conv2d in plain PyTorch: the specification (F.conv2d with 'same' padding, then the activation)."""
from __future__ import annotations

import torch.nn.functional as F

from .. import activation as activations


def reference(x, weight, bias=None, dilation=1, activation=None):
    y = F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)
    return activations.apply(y, activation)
