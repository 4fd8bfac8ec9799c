"""Helpers shared by the model-zoo tests: randomised batch-norm and the agreement measures."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fastseg.models import base as model_base

REL_TOL = 1e-4          # max |ours - source| / max |source| on the logits
LABEL_AGREEMENT = 0.999  # fraction of pixels with the same label


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters so that folding them is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def agreement(labels: torch.Tensor, ref_logits: torch.Tensor) -> float:
    ref = ref_logits.argmax(1)
    assert labels.shape == ref.shape, (labels.shape, ref.shape)
    return (labels.long() == ref).double().mean().item()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tests check numbers, not speed: on the shared 2-core machine two OpenMP threads per
    process spin against the other processes and run up to 10x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Local(model_base.SegmentationModel):
    """A small local model (logits of a stride-s cell from that cell's pixels), trained at 24x32."""

    def __init__(self, stride=1, classes=5, trained=(24, 32)):
        super().__init__()
        torch.manual_seed(0)
        self.output_stride = stride
        self.embed = nn.Conv2d(3, 16, max(stride, 3), stride=stride, padding=0 if stride > 1 else 1)
        self.classify = nn.Conv2d(16, classes, 1)
        self.config = {"name": "local", "kwargs": {}, "input_size": list(trained)}

    def forward_logits(self, x):
        return self.classify(torch.tanh(self.embed(x) * 3))
