"""Which precision the network runs in: what `precision=` names, "auto" resolved, and why.

"fp32", "fp16" and "bf16" are checked by `choice.check_precision` (reduced precision must be native
on the device, never emulated by accident). "int8" runs a quantized graph (`fastseg.quantize`), on the
CPU only. "auto" is decided here, by a rule measured on the CPU engines (`fastseg bench --only
cpu_engines_default,cpu_engines_lraspp`):

- bf16 on a CPU with native bf16 (AVX512-BF16 or AMX-BF16, asked of the CPU itself at run time, so
  an AVX2-only CPU gets fp32) when OpenVINO is installed and the runtime is "auto" or "openvino",
  and a short measurement of the model on this CPU (`bf16_probe`, cached) finds bf16 faster with
  >= 99.5 % of the labels equal: OpenVINO's bf16 network with fastseg's tail ran 1.7-2.2x as fast
  as the fp32 Segmenter on both benchmark models and keeps the default model's labels on CamVid
  (tests/test_precision.py), but a model with near-tied logits (random weights) flips many, which
  the measurement catches. torch's own bf16 path (oneDNN) is not chosen: it is slower than
  OpenVINO's, and its bf16 logits flip more labels.
- fp32 everywhere else (no native bf16, no OpenVINO, another runtime asked for, a GPU).

The Segmenter keeps the answer (`Segmenter.precision`) and the sentence saying why
(`Segmenter.precision_reason`).
"""
from __future__ import annotations

import torch
from torch import nn

CHOICES = ("auto", "fp32", "fp16", "bf16", "int8")


def _cpu_has(*features: str) -> bool:
    """Whether this CPU has any of `features` (fastseg._cpu's names), asked of the CPU itself."""
    try:
        from .. import _cpu
    except ImportError:  # no native build: claim nothing
        return False
    return any(_cpu.has(f) for f in features)


def cpu_features() -> str:
    """Every extension fastseg can test that this CPU has, space-separated."""
    try:
        from .. import _cpu
    except ImportError:
        return ""
    return " ".join(f for f in _cpu.known() if _cpu.has(f))


def native_bf16() -> bool:
    """The CPU computes bf16 dot products in hardware (AVX512-BF16 or AMX-BF16)."""
    return _cpu_has("avx512bf16", "amx-bf16")


def amx() -> bool:
    """The CPU has AMX (Intel Xeon of the 4th generation and later), where OpenVINO's fp32 network
    leads (`choice.py`)."""
    return _cpu_has("amx-tile", "amx-bf16", "amx-int8")


def native_int8() -> bool:
    """The CPU has int8 dot-product instructions (AVX512-VNNI or AMX-INT8); without them int8
    convolutions take the slower multiply-add path whose 16-bit intermediates can saturate."""
    return _cpu_has("avx512vnni", "amx-int8")


def choose_precision(precision: str, resolved, device: torch.device, runtime: str,
                     allow_emulated: bool) -> tuple[nn.Module, str, str]:
    """(the model to run, the precision to run it in, why): `precision` checked, or "auto" resolved
    by the rule above. resolved: the `model_spec.ResolvedModel` of the Segmenter's model argument;
    for int8 the model to run is its quantized graph (`quantized.int8_model`)."""
    from . import openvino_runtime
    from .choice import check_precision
    from .quantized import QuantizedGraph, int8_model

    if precision not in CHOICES:
        raise ValueError(f"precision: expected one of {CHOICES}, got {precision!r}")
    model = resolved.model
    if isinstance(model, QuantizedGraph) or precision == "int8":
        if device.type != "cpu":
            raise ValueError(f"precision: int8 graphs run on the CPU only, not on {device.type}")
        if precision in ("fp16", "bf16"):
            raise ValueError(f"precision: {resolved.source} is an int8 graph; it cannot run in {precision}")
        packaged = resolved.source if resolved.kind == "packaged" else None
        reason = "asked for" if precision == "int8" else "the model is an int8 graph"
        graph = int8_model(model, packaged)
        return graph, "int8", reason + _saturation_advice(graph)
    if precision != "auto":
        return model, check_precision(precision, device, allow_emulated), "asked for"
    return (model, *_auto(model, device, runtime, openvino_runtime.available()))


def _saturation_advice(graph) -> str:
    """What the reason adds for an int8 graph with 8-bit weights on a CPU without VNNI (nothing
    elsewhere): there the engines multiply uint8 by int8 with 16-bit saturating adds, where two
    full-range products can overflow; `fastseg quantize` stores 7-bit weights unless --no-reduce-range."""
    if native_int8() or getattr(graph, "reduce_range", False):
        return ""
    return ("; this CPU has no VNNI (AVX512-VNNI / AMX-INT8), where int8 convolutions of 8-bit weights can "
            "saturate: quantize again without --no-reduce-range (7-bit weights, `fastseg quantize`'s default, cannot)")


def _auto(model: nn.Module, device: torch.device, runtime: str, openvino: bool) -> tuple[str, str]:
    from . import bf16_probe

    if device.type != "cpu":
        return "fp32", f"auto: reduced precision is chosen by measurement on CPUs only, not on {device.type}"
    if runtime not in ("auto", "openvino"):
        return "fp32", f"auto: bf16 is faster only in OpenVINO, and runtime={runtime!r} was asked for"
    if not native_bf16():
        return "fp32", "auto: this CPU has no native bf16 (AVX512-BF16 / AMX-BF16)"
    if not openvino:
        return "fp32", "auto: native bf16, but OpenVINO (its fastest bf16 network) is not installed"
    found = bf16_probe.verdict(model, cpu_features())
    return ("bf16" if found.bf16 else "fp32"), found.reason
