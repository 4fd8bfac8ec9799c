"""Does bf16 pay for this model on this CPU? A short measurement, made once and kept on disk.

precision="auto" picks bf16 only where it is faster than fp32 and keeps the labels. Speed depends on
the CPU and the model, and so does agreement: a trained model's logits have margins that bf16
rounding rarely crosses, while a model with near-tied logits (random weights, or one barely
trained) flips many labels. So on a CPU where bf16 is native, the first "auto" Segmenter of a model
runs fp32 (the default fp32 runtime) and bf16 (OpenVINO) on one real 480x360 street frame, one of
the CamVid frames the package ships for `fastseg demo` (from the drive filmed at dusk): bf16 is
chosen when at least AGREEMENT of the labels are equal and its median time over a few interleaved
runs is at least MARGIN faster. The verdict is cached under the ONNX cache folder, keyed by the
model's graph key and the CPU's features, so later Segmenters read it in microseconds.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

AGREEMENT = 0.995   # labels equal to fp32, as the CamVid test holds the default model to
MARGIN = 1.05       # bf16 must be this much faster (medians), not a tie within noise
ROUNDS = 3
SIZE = (360, 480)
PROBE_FRAME = "0001TP_008310.jpg"  # in fastseg/assets/camvid_demo, from CamVid's drive at dusk
# 2: fp32 on a CPU with AMX became OpenVINO (choice.py), so verdicts measured against torch are stale;
# 3: the probe frame became a real one (verdicts from the synthetic frame are stale)
FORMAT = 3


@dataclass(frozen=True)
class Verdict:
    bf16: bool
    agreement: float
    speedup: float   # fp32 median / bf16 median

    @property
    def reason(self) -> str:
        figures = f"{100 * self.agreement:.2f} % labels equal to fp32, {self.speedup:.2f}x fp32's speed"
        return f"auto: bf16 measured on this model and CPU: {figures}"


def verdict(model: nn.Module, cpu_features: str) -> Verdict:
    """The cached verdict for `model` on a CPU with these features, measured now when there is none."""
    from .._atomic import atomic_write
    from . import onnx_cache

    key = hashlib.sha256(f"{FORMAT}\0{onnx_cache.graph_key(model)}\0{cpu_features}".encode()).hexdigest()[:32]
    path = onnx_cache.cache_dir() / "precision" / f"bf16-{key}.json"
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return Verdict(**json.loads(path.read_text()))
    result = measure(model)
    with contextlib.suppress(OSError), atomic_write(path) as f:  # a read-only cache: measured each time
        f.write(json.dumps(asdict(result)).encode())
    return result


def measure(model: nn.Module) -> Verdict:
    from .. import _native, ops
    from .choice import choose_runtime
    from .openvino_runtime import OpenVinoRuntime

    fp32 = choose_runtime("auto", model, torch.device("cpu"), "fp32")
    bf16 = OpenVinoRuntime(model, "bf16")
    x = _frame(model)
    runs = {"fp32": lambda: fp32(x.contiguous(memory_format=fp32.memory_format)), "bf16": lambda: bf16(x)}
    labels, seconds = {}, {name: [] for name in runs}
    align = bool(getattr(model, "align_corners", False))
    with torch.inference_mode(), _native.own_threads():
        for name, run in runs.items():  # the first call compiles / allocates: untimed
            labels[name] = ops.upsample_argmax(run().float(), size=SIZE, align_corners=align)
        for _ in range(ROUNDS):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    agreement = float((labels["fp32"] == labels["bf16"]).double().mean())
    speedup = statistics.median(seconds["fp32"]) / statistics.median(seconds["bf16"])
    return Verdict(agreement >= AGREEMENT and speedup >= MARGIN, agreement, speedup)


def _frame(model: nn.Module) -> torch.Tensor:
    """A real street frame at SIZE, normalised as the model expects. A smooth synthetic image was used
    before: out of the distribution a model is trained on, its logits are nearly tied where a real
    frame's are not, so it understated agreement (the default U-Net: 99.31 % of labels equal on it,
    99.89-99.96 % on each of the six packaged frames)."""
    import numpy as np
    from PIL import Image

    with Image.open(Path(__file__).resolve().parents[1] / "assets" / "camvid_demo" / PROBE_FRAME) as img:
        rgb = np.array(img.convert("RGB"))
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255)
    if tuple(image.shape[-2:]) != SIZE:
        image = F.interpolate(image, size=SIZE, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(getattr(model, "mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
    std = torch.tensor(getattr(model, "std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
    return ((image - mean) / std).contiguous()
