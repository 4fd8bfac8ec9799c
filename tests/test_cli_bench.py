"""`fastseg bench` on a few quick cases (every case runs in CI through `pytest benchmarks --quick`;
this checks the command: its results file, table and plot, never the speed), its failure paths, and
what a results file holds."""
from __future__ import annotations

import datetime
import json

import pytest
from PIL import Image

import fastseg.bench
from fastseg.bench import CASES, Agreement, Case, Reference, measure
from fastseg.bench.measure import Row
from fastseg.bench.results import load
from fastseg.cli import main

from _eval_model import save_small_model
from _zoo import one_torch_thread  # noqa: F401  (autouse)

QUICK_CASES = "upsample_argmax,confusion_matrix,default_model"


def test_bench_quick_writes_results_table_and_plot(tmp_path, capsys):
    model = save_small_model(tmp_path / "small.safetensors")
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--only", QUICK_CASES, "--out", str(out), "--model", str(model),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    content = json.loads((out / "bench.json").read_text())
    assert content["quick"] is True
    datetime.datetime.strptime(content["date"], "%Y-%m-%dT%H:%M:%SZ")
    assert len(content["commit"]) == 40  # the tests run from a checkout
    cpu = content["machine"]["cpu"]
    assert cpu["model"] and cpu["cores"] >= 1 and isinstance(cpu["flags"], list)
    assert all(f.startswith(("avx2", "avx512", "amx", "fma")) or "vnni" in f or "bf16" in f for f in cpu["flags"])
    assert content["machine"]["torch"] == __import__("torch").__version__
    rows = content["rows"]
    assert [r["name"] for r in rows] == ["upsample_argmax", "confusion_matrix", "confusion_matrix", "default_model"]
    assert {r["reference"] for r in rows} >= {"F.interpolate + argmax (eager)", "torch.bincount(t*C+p)",
                                              "torchmetrics MulticlassJaccardIndex"}
    assert rows[-1]["case"] == "Segmenter: small.safetensors"
    for r in rows:
        assert r["ok"] and r["agreement"]["ok"], r
        assert r["ours_ms"] > 0 and r["ref_ms"] > 0 and r["rounds"] >= 1
        assert r["ratio"] == pytest.approx(r["ref_ms"] / r["ours_ms"])
        assert f"{r['ratio']:.2f}x" in printed and r["reference"] in printed
    assert rows[0]["agreement"]["measure"] == "labels equal" and rows[0]["agreement"]["value"] >= 0.99999
    table = (out / "bench.md").read_text()
    assert table.count("\n| ") == len(rows) + 2  # header, rule, one line per row
    with Image.open(out / "bench.png") as im:
        assert im.format == "PNG" and im.size[0] > 600


def test_results_file_round_trip(tmp_path):
    """What load() reads back is what the case measured."""
    rows = measure("op", "1x2", {"fastseg": lambda: 1}, {"ref": Reference(lambda: 1, Agreement.exact(True), 2.0)},
                   rounds=1)
    from fastseg.bench import results

    path = tmp_path / "r.json"
    results.write(path, results.results(True, rows, 1.0, results.now(), results.machine()))
    _, back, figures = load(path)
    assert back == rows and figures == []
    assert back[0].target == 2.0 and isinstance(back[0], Row)


def test_agreement_figures():
    """Labels and values compared as the cases compare them, with their tolerances."""
    import torch

    a = torch.zeros(100, dtype=torch.uint8)
    b = a.clone()
    b[:3] = 1
    assert Agreement.labels(a, b, 0.97).ok and not Agreement.labels(a, b, 0.98).ok
    assert Agreement.labels(a, b, 0.97).value == pytest.approx(0.97)
    assert not Agreement.labels(a, b[:50], 0.0).ok  # shapes differ: nothing agrees
    x = torch.ones(10)
    assert Agreement.close(x * (1 + 1e-6), x, 1e-5).ok and not Agreement.close(x * 1.01, x, 1e-5).ok
    assert Agreement.exact(False).text == "RESULTS DIFFER"
    both = Agreement.labels(a, a, 1.0)
    assert both.requiring(True, "more").ok and not both.requiring(False, "more").ok
    assert both.requiring(True, "more").text == "100.0000 % labels equal, more"


def test_bench_disagreement_fails(tmp_path, capsys, monkeypatch):
    """A row whose results differ is drawn and written, and the command exits 1."""
    def broken(quick):
        return measure("broken op", "1", {"fastseg": lambda: 1},
                       {"its reference": Reference(lambda: 2, Agreement.exact(False))}, rounds=1)

    monkeypatch.setitem(CASES, "atrous_conv", Case("atrous_conv", broken))
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--only", "atrous_conv", "--out", str(out), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out
    assert "broken op: fastseg vs its reference: results differ (RESULTS DIFFER)" in captured.err
    assert json.loads((out / "bench.json").read_text())["rows"][0]["ok"] is False
    assert (out / "bench.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--only", "upsample,nothing"], "unknown case(s) ['upsample', 'nothing']"),
    (["--only", ","], "unknown case(s)"),
    (["--only", "crf_camvid"], "crf_camvid need(s) --camvid DIR"),
    (["--model", "/no/such/model.safetensors"], "is not a file"),
    (["--camvid", "/no/such/camvid"], "has no val/ folder"),
])
def test_bench_bad_arguments(tmp_path, capsys, argv, message):
    assert main(["bench", "--quick", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastseg bench: error:") and message in err, err
    if "unknown" in message:
        assert all(c in err for c in CASES)


def test_cases_are_the_benchmark_suite():
    """`pytest benchmarks/` parametrises over the same registry `fastseg bench` runs."""
    from pathlib import Path

    suite = (Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cases.py").read_text()
    assert "parametrize(\"name\", list(CASES))" in suite
    assert set(CASES) >= {"upsample_argmax", "confusion_matrix", "crf", "atrous_conv", "aspp", "default_model",
                          "lraspp", "deeplabv3"}
    assert fastseg.bench.CASES is CASES
