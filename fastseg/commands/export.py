"""`fastseg export`: a model as one ONNX graph, image in, labels out (fastseg.export.export_onnx).

    fastseg export [MODEL] --output model.onnx [--check]

The graph takes uint8 [N,H,W,3] RGB (any batch and size) and returns labels [N,H,W]: normalisation,
the model, the bilinear resize and the argmax are all inside it. --check runs the written file in
ONNX Runtime on test images and compares its labels with fastseg's own (PyTorch) answer.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import cast

import numpy as np

from .._atomic import atomic_write
from ._model import add_model_arguments, choose_model

# --check: ONNX Runtime and PyTorch sum in different orders, so a pixel whose two best classes are
# nearly tied may get either label; every other pixel must get the same one.
NEAR_TIE = 1e-4


def add_arguments(parser) -> None:
    add_model_arguments(parser, positional=True)
    parser.add_argument("--output", "-o", required=True, type=Path, help="the .onnx file to write")
    parser.add_argument("--labels-dtype", default="uint8", choices=("uint8", "int64"),
                        help="dtype of the graph's labels output")
    parser.add_argument("--float-input", action="store_true",
                        help="take float32 [N,3,H,W] already normalised instead of uint8 [N,H,W,3]")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: fastseg's)")
    parser.add_argument("--check", action="store_true",
                        help="run the file in ONNX Runtime and compare its labels with PyTorch's")


def run(args) -> int:
    from ..export import DEFAULT_OPSET, export_onnx

    try:
        chosen = choose_model(args.model, args.num_classes, args.dataset)
    except (ValueError, FileNotFoundError) as exc:
        print(f"fastseg export: {exc}", file=sys.stderr)
        return 2
    print(chosen.summary())
    buffer = io.BytesIO()
    try:
        export_onnx(chosen.model, buffer, labels_dtype=args.labels_dtype, uint8_input=not args.float_input,
                    opset=args.opset or DEFAULT_OPSET)
    except (ValueError, TypeError) as exc:
        print(f"fastseg export: {exc}", file=sys.stderr)
        return 2
    with atomic_write(args.output) as f:
        f.write(buffer.getvalue())
    print(f"wrote {args.output} ({len(buffer.getvalue()) / 1e6:.1f} MB): input 'image' "
          + ("float32 [N,3,H,W] normalised" if args.float_input else "uint8 [N,H,W,3] RGB")
          + f", output 'labels' {args.labels_dtype} [N,H,W]; {chosen.num_classes} classes")
    if not args.check:
        return 0
    results = check(args.output, chosen.model, float_input=args.float_input)
    for (h, w), (agreement, wrong) in results.items():
        print(f"check: {w}x{h}: {100 * agreement:.3f} % of pixels the same label as PyTorch; "
              f"{wrong} different away from near-ties")
    ok = all(wrong == 0 for _, wrong in results.values())
    print(f"check: {'passed' if ok else 'FAILED'} (ONNX Runtime {'agrees' if ok else 'disagrees'} with PyTorch "
          f"wherever the two best classes are not tied within {NEAR_TIE:g} of the largest logit)")
    return 0 if ok else 1


def check(path: Path, model, float_input: bool = False, sizes=((360, 480), (97, 131))) -> dict:
    """Run the ONNX file in ONNX Runtime and PyTorch's model on the same smooth random images (blobs,
    not noise; two per batch) at each (H, W) of `sizes`. Per size: (fraction of pixels with equal
    labels, number of unequal pixels that are not near-ties). A near-tie is a pixel whose two best
    logits differ by at most NEAR_TIE of the largest |logit|: there the two runtimes' rounding may
    pick either class; anywhere else a difference means the graph is wrong."""
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    from ..models import fuse
    from ..models.base import SegmentationModel

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net = cast(SegmentationModel, fuse(model).float().eval())
    mean = torch.tensor(net.mean).view(1, 3, 1, 1)
    std = torch.tensor(net.std).view(1, 3, 1, 1)
    result = {}
    gen = torch.Generator().manual_seed(0)
    for h, w in sizes:
        low = torch.rand((2, 3, max(2, h // 16), max(2, w // 16)), generator=gen)
        images = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        images = (images * 255).round().to(torch.uint8)               # [N,3,H,W]
        x = (images.float() / 255 - mean) / std
        with torch.no_grad():
            z = F.interpolate(net.forward_logits(x), size=(h, w), mode="bilinear",
                              align_corners=bool(net.align_corners))
        top2 = z.topk(2, dim=1).values
        decided = ((top2[:, 0] - top2[:, 1]) > NEAR_TIE * z.abs().amax()).numpy()
        expected = z.argmax(1).numpy()
        feed = x.numpy() if float_input else np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())
        labels = session.run(None, {"image": feed})[0].astype(np.int64)
        unequal = labels != expected
        result[(h, w)] = (float(1 - unequal.mean()), int((unequal & decided).sum()))
    return result
