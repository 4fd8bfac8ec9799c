"""ONNX export of a fastseg model with the whole pipeline in the graph: image in, labels out.

    fastseg.export.export_onnx(model, "model.onnx")        # uint8 [N,H,W,3] in, uint8 labels [N,H,W] out
    session = onnxruntime.InferenceSession("model.onnx")
    labels = session.run(None, {"image": image_batch})[0]

The graph normalises the image (the model's mean / std), runs the inference form of the model
(`fastseg.models.fuse`: batch-norm folded, dropout gone), resizes the logits bilinearly to the input
size and takes the argmax over classes (ONNX ArgMax keeps the first index on ties, like torch).
Batch, height and width are dynamic. `export_logits_onnx` exports `forward_logits` alone (normalised
float in, low-resolution logits out): the Segmenter's "onnxruntime" runtime runs that graph and
fastseg's fused upsample+argmax after it.

The exporter is torch's TorchScript-based one (`dynamo=False`): it needs no onnxscript and traces
the fused ops' CPU paths, which are plain torch calls.
"""
from __future__ import annotations

import os
import warnings
from typing import IO

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["export_onnx", "export_logits_onnx"]

LABEL_DTYPES = {"uint8": torch.uint8, "int64": torch.int64}
DEFAULT_OPSET = 17


class _LabelsGraph(nn.Module):
    """image -> labels, the function the exported graph computes."""

    def __init__(self, model: nn.Module, labels_dtype: torch.dtype, uint8_input: bool):
        super().__init__()
        self.model = model
        self.labels_dtype = labels_dtype
        self.uint8_input = uint8_input
        mean = torch.tensor(model.mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        std = torch.tensor(model.std, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", mean / std)

    def forward(self, image):
        if self.uint8_input:  # uint8 [N,H,W,3] -> normalised float [N,3,H,W]
            x = image.permute(0, 3, 1, 2).float() * self.scale - self.shift
        else:  # already normalised float [N,3,H,W]
            x = image
        logits = self.model.forward_logits(x)
        size = x.shape[-2:]
        z = F.interpolate(logits, size=size, mode="bilinear", align_corners=bool(self.model.align_corners))
        return z.argmax(1).to(self.labels_dtype)


class _LogitsGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_logits(x)


def _inference_copy(model: nn.Module) -> nn.Module:
    from .models import fuse

    if not hasattr(model, "forward_logits"):
        raise TypeError("model: expected a fastseg model (with forward_logits); convert others with "
                        "fastseg.models.from_torchvision / from_smp / from_transformers")
    return fuse(model).float().cpu().eval()


def _export(graph: nn.Module, example: torch.Tensor, f, output: str, dynamic: dict, opset: int) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(graph, (example,), f, dynamo=False, input_names=["image"], output_names=[output],
                          dynamic_axes={"image": dynamic["image"], output: dynamic[output]},
                          opset_version=opset, do_constant_folding=True)


def export_onnx(model: nn.Module, path: str | os.PathLike | IO[bytes], *, labels_dtype: str = "uint8",
                uint8_input: bool = True, example_size: tuple[int, int] = (64, 96),
                opset: int = DEFAULT_OPSET) -> None:
    """Write `model` as an ONNX graph from image to labels.

    uint8_input: True: input "image" uint8 [N,H,W,3] RGB (normalisation in the graph); False: float32
        [N,3,H,W] already normalised with the model's mean / std.
    labels_dtype: "uint8" (at most 256 classes) or "int64"; output "labels" [N,H,W].
    example_size: the (H, W) traced with; every size works at run time (dynamic axes).
    """
    if labels_dtype not in LABEL_DTYPES:
        raise ValueError(f"labels_dtype: expected one of {tuple(LABEL_DTYPES)}, got {labels_dtype!r}")
    net = _inference_copy(model)
    classes = _num_classes(net, example_size)
    if labels_dtype == "uint8" and classes > 256:
        raise ValueError(f"labels_dtype: uint8 cannot hold {classes} classes; use 'int64'")
    graph = _LabelsGraph(net, LABEL_DTYPES[labels_dtype], bool(uint8_input))
    h, w = example_size
    example = torch.zeros((1, h, w, 3), dtype=torch.uint8) if uint8_input else torch.zeros((1, 3, h, w))
    image_axes = {0: "batch", 1: "height", 2: "width"} if uint8_input else {0: "batch", 2: "height", 3: "width"}
    _export(graph.eval(), example, _target(path), "labels",
            {"image": image_axes, "labels": {0: "batch", 1: "height", 2: "width"}}, opset)


def export_logits_onnx(model: nn.Module, path: str | os.PathLike | IO[bytes], *,
                       example_size: tuple[int, int] = (64, 96), opset: int = DEFAULT_OPSET) -> None:
    """Write `forward_logits` alone: input "image" float32 [N,3,H,W] normalised, output "logits"
    [N,C,h,w] at the model's output stride."""
    net = _inference_copy(model)
    example = torch.zeros((1, 3, *example_size))
    _export(_LogitsGraph(net).eval(), example, _target(path), "logits",
            {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "h", 3: "w"}}, opset)


def _target(path):
    return path if hasattr(path, "write") else os.fspath(path)


def _num_classes(model: nn.Module, size) -> int:
    with torch.no_grad():
        return int(model.forward_logits(torch.zeros((1, 3, *size))).shape[1])
