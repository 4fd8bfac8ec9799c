"""`fastseg bench --quick` (the quick shapes only: this checks that every case runs, agrees with its
reference and is written out, never the speed), and its failure paths."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from _eval_model import save_small_model
from _zoo import one_torch_thread  # noqa: F401  (autouse)
import fastseg.bench.ops
from fastseg.bench import CASES, Reference, measure
from fastseg.cli import main


def test_bench_quick_writes_table_and_plot(tmp_path, capsys):
    model = save_small_model(tmp_path / "small.safetensors")
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--out", str(out), "--model", str(model), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "bench.json").read_text())
    rows = report["rows"]
    assert report["quick"] is True
    # every case gave its rows (torchmetrics, pydensecrf2 and torchvision are test dependencies)
    cases = [r["case"] for r in rows]
    for expected in ("upsample + argmax", "confusion matrix", "dense CRF", "atrous conv",
                     "Segmenter: small.safetensors", "Segmenter: LR-ASPP"):
        assert any(c.startswith(expected) for c in cases), (expected, cases)
    assert {r["reference"] for r in rows} >= {"torch.bincount(t*C+p)", "torchmetrics MulticlassJaccardIndex",
                                                "pydensecrf2", "torchvision (eager, NCHW), same weights"}
    for r in rows:
        assert r["ok"], r
        assert r["ref_ms"] > 0 and r["ours_ms"] > 0
        assert r["speedup"] == pytest.approx(r["ref_ms"] / r["ours_ms"])
        assert f"{r['speedup']:.2f}x" in printed and r["agreement"] in printed
    table = (out / "bench.md").read_text()
    assert table.count("\n| ") == len(rows) + 1  # header + one line per row (after the rule)
    with Image.open(out / "bench.png") as im:
        assert im.format == "PNG" and im.size[0] > 600


def test_bench_disagreement_fails(tmp_path, capsys, monkeypatch):
    """A row whose results differ is drawn and written, and the command exits 1."""
    def broken(quick):
        return measure("broken op", "1", lambda: 1, {"its reference": Reference(lambda: 2, "labels differ", False)},
                       rounds=1)

    monkeypatch.setattr(fastseg.bench.ops, "atrous_conv_case", broken)
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--only", "atrous_conv", "--out", str(out), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out and "broken op vs its reference: results differ" in captured.err
    assert json.loads((out / "bench.json").read_text())["rows"][0]["ok"] is False
    assert (out / "bench.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--only", "upsample,nothing"], "unknown case(s) ['upsample', 'nothing']"),
    (["--only", ","], "unknown case(s)"),
    (["--model", "/no/such/model.safetensors"], "is not a file"),
])
def test_bench_bad_arguments(tmp_path, capsys, argv, message):
    assert main(["bench", "--quick", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastseg bench: error:") and message in err, err
    assert all(c in err for c in CASES) or "--model" in argv
