"""fastseg against the references users would otherwise run: the benchmark cases, defined once.

`fastseg bench` and `pytest benchmarks/` run these same cases. Each case checks that fastseg agrees
with its references (a disagreement fails the run) and times fastseg and every reference round-robin
in the same run; the claim is the ratio reference / fastseg (`measure.Row`), never an absolute time
(ARCHITECTURE.md, P2: ratios, not times).
A few cases measure something else (peak memory, the mIoU the CRF adds: `measure.Figure`).
`quick` picks small shapes and few rounds (what CI runs). A run's rows and figures, with the machine
they ran on, are one JSON results file (`results`).

    from fastseg.bench import CASES, run_case
    rows = run_case("upsample_argmax", quick=True)

The cases that need a CUDA GPU are in `gpu` (timed with CUDA events, `cuda_timing`); `make gpu-check`
(benchmarks/gpu/check.py) runs them.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from . import arena, cpu_engines, crf, int8, memory, models, ops, ray_overhead, resize, scale_camvid, stream
from .measure import Agreement, Figure, Reference, Row, measure

__all__ = ["CASES", "Case", "run_case", "Agreement", "Figure", "Reference", "Row", "measure"]


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[..., list]

    @property
    def options(self) -> dict[str, bool]:
        """The options the case takes (camvid, model), each with whether it is required."""
        params = list(inspect.signature(self.run).parameters.values())[1:]
        return {p.name: p.default is inspect.Parameter.empty for p in params}


CASES: dict[str, Case] = {case.name: case for case in (
    Case("upsample_argmax", ops.upsample_argmax),
    Case("upsample_argmax_confidence", ops.upsample_argmax_confidence),
    Case("upsample_argmax_memory", memory.upsample_argmax_memory),
    Case("resize_normalize", resize.resize_normalize),
    Case("confusion_matrix", ops.confusion_matrix_uint8),
    Case("confusion_matrix_int64", ops.confusion_matrix_int64),
    Case("atrous_conv", ops.atrous_conv_channels_last),
    Case("atrous_conv_nchw", ops.atrous_conv_nchw),
    Case("aspp", models.aspp),
    Case("crf", crf.crf),
    Case("crf_batch", crf.crf_batch),
    Case("crf_memory", crf.crf_memory),
    Case("crf_camvid", crf.crf_camvid),
    Case("default_model", models.default_model),
    Case("scale_camvid", scale_camvid.scale_camvid),
    Case("lraspp", models.lraspp),
    Case("lraspp_compile", models.lraspp_compile),
    Case("deeplabv3", models.deeplabv3),
    Case("onnxruntime_arena", arena.onnxruntime_arena),
    Case("cpu_engines_default", cpu_engines.default_model),
    Case("cpu_engines_lraspp", cpu_engines.lraspp),
    Case("int8_camvid", int8.int8_camvid),
    Case("stream", stream.stream),
    Case("ray_predict", ray_overhead.ray_predict),
)}


def run_case(name: str, quick: bool, **options) -> list[Row | Figure]:
    """The rows (or figures) of one case; options it does not take are ignored (None: not given)."""
    case = CASES[name]
    taken = {k: v for k, v in options.items() if k in case.options and v is not None}
    missing = [k for k, required in case.options.items() if required and k not in taken]
    if missing:
        raise ValueError(f"bench case {name} needs {', '.join(missing)}")
    items = case.run(quick, **taken)
    for item in items:
        item.name = name
    return items
