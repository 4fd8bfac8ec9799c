"""precision="bf16" / "auto" on the CPU: the runtime and precision chosen from what the CPU has (asked
at run time, so an AVX2-only CPU gets fp32), said in words; bf16 keeps the default model's labels on
real CamVid frames."""
from __future__ import annotations

import numpy as np
import pytest

import fastseg
from fastseg.segmenter import openvino_runtime, precision

from _images import agreement
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

BF16_EQUAL = 0.995  # fraction of CamVid val pixels whose bf16 label equals the fp32 one


def _bf16_runs_here() -> bool:
    return precision.native_bf16() and openvino_runtime.available()


def test_auto_picks_bf16_only_with_native_bf16_and_openvino(monkeypatch):
    seg = fastseg.Segmenter(precision="auto")
    assert seg.precision == ("bf16" if _bf16_runs_here() else "fp32")
    assert seg.precision_reason.startswith("auto: ") and seg.precision in repr(seg)
    if seg.precision == "bf16":
        assert seg.runtime.name == "openvino" and "AVX512-BF16" in seg.precision_reason
    # an AVX2-only CPU (no AVX512-BF16, no AMX): fp32, and why
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    seg = fastseg.Segmenter(precision="auto")
    assert seg.precision == "fp32" and "no native bf16" in seg.precision_reason
    assert seg.runtime.name == "onnxruntime"


def test_auto_keeps_fp32_when_another_runtime_is_asked_for(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    seg = fastseg.Segmenter(precision="auto", runtime="torch")
    assert seg.precision == "fp32" and "runtime='torch'" in seg.precision_reason
    monkeypatch.setattr(openvino_runtime, "available", lambda: False)
    seg = fastseg.Segmenter(precision="auto")
    assert seg.precision == "fp32" and "not installed" in seg.precision_reason


def test_features_are_asked_of_the_cpu():
    from fastseg import _cpu

    assert precision.native_bf16() == (_cpu.has("avx512bf16") or _cpu.has("amx-bf16"))
    assert precision.native_int8() == (_cpu.has("avx512vnni") or _cpu.has("amx-int8"))


@pytest.mark.camvid
def test_bf16_keeps_the_default_models_labels_on_camvid(camvid_root):
    if not _bf16_runs_here():
        pytest.skip("bf16 runs natively only on CPUs with AVX512-BF16 / AMX (and with OpenVINO installed)")
    val = fastseg.data.get_dataset("camvid", camvid_root, "val")
    fp32, bf16 = fastseg.Segmenter(), fastseg.Segmenter(precision="bf16")
    assert bf16.runtime.name == "openvino"
    frames = [val[i][0] for i in range(0, len(val), 4)]
    equal = float(np.mean([agreement(bf16.predict(f).labels, fp32.predict(f).labels) for f in frames]))
    assert equal >= BF16_EQUAL, equal
