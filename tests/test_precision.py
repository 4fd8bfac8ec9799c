"""precision="bf16" / "auto" on the CPU: the runtime and precision chosen from what the CPU has (asked
at run time, so an AVX2-only CPU gets fp32), said in words; bf16 keeps the default model's labels on
real CamVid frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastseg
from fastseg.segmenter import inputs, openvino_runtime, precision

from _images import agreement
from _runtimes import fp32_auto
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

BF16_EQUAL = 0.995  # fraction of CamVid val pixels whose bf16 label equals the fp32 one


def _bf16_runs_here() -> bool:
    return precision.native_bf16() and openvino_runtime.available()


def test_auto_picks_bf16_only_with_native_bf16_and_openvino(monkeypatch):
    seg = fastseg.Segmenter(precision="auto")
    assert seg.precision == ("bf16" if _bf16_runs_here() else "fp32")
    assert seg.precision_reason.startswith("auto: ") and seg.precision in repr(seg)
    if seg.precision == "bf16":  # measured on this CPU: faster, labels kept
        assert seg.runtime.name == "openvino" and "labels equal to fp32" in seg.precision_reason
    # an AVX2-only CPU (no AVX512-BF16, no AMX): fp32, and why
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    seg = fastseg.Segmenter(precision="auto")
    assert seg.precision == "fp32" and "no native bf16" in seg.precision_reason
    # the default U-Net's fp32 runtime: OpenVINO on a CPU with AMX, else torch (segmenter/choice.py)
    assert seg.runtime.name == fp32_auto("torch")


def test_auto_keeps_fp32_when_another_runtime_is_asked_for(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    seg = fastseg.Segmenter(precision="auto", runtime="torch")
    assert seg.precision == "fp32" and "runtime='torch'" in seg.precision_reason
    monkeypatch.setattr(openvino_runtime, "available", lambda: False)
    seg = fastseg.Segmenter(precision="auto")
    assert seg.precision == "fp32" and "not installed" in seg.precision_reason


def test_auto_measures_once_and_keeps_fp32_where_bf16_flips_labels(monkeypatch, tmp_path):
    from fastseg.segmenter import bf16_probe

    monkeypatch.setenv("FASTSEG_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    monkeypatch.setattr(openvino_runtime, "available", lambda: True)
    calls = []
    monkeypatch.setattr(bf16_probe, "measure",
                        lambda model: calls.append(1) or bf16_probe.Verdict(False, 0.61, 2.0))
    for _ in range(2):
        seg = fastseg.Segmenter(precision="auto")
        assert seg.precision == "fp32" and "61.00 % labels equal" in seg.precision_reason
    assert len(calls) == 1  # the verdict is cached per model and CPU


def test_probe_rejects_a_model_with_tied_logits():
    if not _bf16_runs_here():
        pytest.skip("bf16 runs natively only on CPUs with AVX512-BF16 / AMX (and with OpenVINO installed)")
    from fastseg.segmenter import bf16_probe

    from _cli import small_model

    model = small_model()
    with torch.no_grad():  # logits ~100 a few hundredths apart: bf16 (steps of 0.5 there) ties them
        last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.mul_(1e-3)
        last.bias.fill_(100.0)
    found = bf16_probe.measure(model)
    assert not found.bf16 and found.agreement < bf16_probe.AGREEMENT


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
    assert bf16._frames_as_they_are(inputs.split(frames[0]).groups[0], 1, (360, 480))  # normalised in OpenVINO
    equal = float(np.mean([agreement(bf16.predict(f).labels, fp32.predict(f).labels) for f in frames]))
    assert equal >= BF16_EQUAL, equal
    # normalised by fastseg in float instead: the same agreement
    bf16.runtime.takes_uint8_hwc = False
    own = float(np.mean([agreement(bf16.predict(f).labels, fp32.predict(f).labels) for f in frames[::4]]))
    assert own >= BF16_EQUAL, own
