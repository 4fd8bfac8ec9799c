"""An AVX2-only x86-64 CPU (Haswell's extensions), simulated at the one place fastseg asks the CPU
(`fastseg._cpu.has`) and at oneDNN's report: every decision taken from the CPU's features at run
time gives the answer it must give there. The machines these tests run on have AVX-512, so without
the simulation these branches would never run. (The native extension's own target check on such a
CPU, emulated by qemu, is in test_native_targets.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastseg
from fastseg import _cpu, _native, _target, _torch_compat
from fastseg.bench import cpu_engines
from fastseg.segmenter import choice, precision

from _images import image
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

HASWELL = {"sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "fma", "bmi", "bmi2", "f16c"}


@pytest.fixture
def avx2_only(monkeypatch):
    monkeypatch.setattr(_cpu, "has", lambda feature: feature in HASWELL)
    monkeypatch.setattr(_cpu, "missing", lambda features: [f for f in features if f not in HASWELL])
    monkeypatch.setattr(_torch_compat, "mkldnn_bf16_supported", lambda: False)
    monkeypatch.setattr(_torch_compat, "mkldnn_fp16_supported", lambda: False)


def test_features_read_as_avx2_only(avx2_only):
    assert not precision.native_bf16() and not precision.native_int8() and not precision.amx()
    assert set(precision.cpu_features().split()) == HASWELL & set(_cpu.known())
    assert cpu_engines.cpu_features() == "avx2"  # the bench's CPU column


def test_auto_precision_is_fp32_and_says_why(avx2_only, model_file):
    seg = fastseg.Segmenter(str(model_file), precision="auto")
    assert seg.precision == "fp32" and "no native bf16" in seg.precision_reason
    assert seg.runtime.name != "openvino"  # fp32 without AMX: torch or ONNX Runtime, OpenVINO installed or not


def test_bf16_is_refused_not_emulated(avx2_only, model_file):
    with pytest.raises(ValueError, match="no native bf16"):
        fastseg.Segmenter(str(model_file), precision="bf16")
    # with emulation allowed, bf16 runs in torch (OpenVINO's bf16 needs native bf16)
    model = fastseg.models.load(str(model_file))
    assert choice._auto(model, torch.device("cpu"), "bf16") == "torch"


def test_int8_runs_and_advises_seven_bit_weights(avx2_only, monkeypatch):
    """A graph of 8-bit weights gets the advice on a CPU without VNNI (and still runs)."""
    pytest.importorskip("onnxruntime")
    from fastseg.segmenter import quantized

    real = quantized.QuantizedGraph.__init__

    def eight_bit(self, path):
        real(self, path)
        self.reduce_range = False

    monkeypatch.setattr(quantized.QuantizedGraph, "__init__", eight_bit)
    seg = fastseg.Segmenter(precision="int8", runtime="onnxruntime")
    assert seg.precision == "int8" and "--no-reduce-range" in seg.precision_reason
    labels = seg.predict(image(96, 128, seed=3)).labels
    assert labels.shape == (96, 128) and labels.dtype == np.uint8


def test_packaged_int8_has_seven_bit_weights_and_gets_no_advice(avx2_only):
    """The packaged graph has 7-bit weights (fastseg quantize's default): nothing to advise on any CPU."""
    pytest.importorskip("onnxruntime")
    seg = fastseg.Segmenter(precision="int8", runtime="onnxruntime")
    assert seg.precision == "int8" and seg.precision_reason == "asked for"


def test_no_advice_where_the_cpu_has_vnni(monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(precision, "native_int8", lambda: True)
    assert fastseg.Segmenter(precision="int8", runtime="onnxruntime").precision_reason == "asked for"


def test_this_build_is_refused_where_it_assumed_more(avx2_only):
    """The native kernels are chosen at compile time: a _C built for AVX-512 must not load."""
    target = _target.built_target(_cpu)
    missing = _target.missing_features(target, _cpu)
    assert missing == [f for f in target["features"] if f not in HASWELL]
    if missing:
        assert "FASTSEG_NATIVE_ARCH=off" in _target.refusal(target, missing)
    assert _native.available()  # the simulation asks later than the real load: this process keeps its _C
