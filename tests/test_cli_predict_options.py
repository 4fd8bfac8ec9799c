"""`fastseg predict`'s run options: --batch-size (same outputs as one by one), --runtime, --scale /
--size (the Segmenter's), and a reduced-precision refusal that names the command's own option."""
from __future__ import annotations

import numpy as np
import pytest

import fastseg
from fastseg import _torch_compat
from fastseg.commands import predict
from fastseg.segmenter import Segmenter

from _cli import fastseg_cli, read_png, write_image
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

SIZES = [(90, 120), (64, 64), (90, 120), (33, 47), (64, 64)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    src = tmp_path_factory.mktemp("in")
    for i, (h, w) in enumerate(SIZES):
        write_image(src / f"img{i}.png", h, w, seed=i)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a PNG")
    return src


def labels_of(out):
    return {p.name: read_png(p) for p in sorted((out / "labels").glob("*.png"))}


@pytest.mark.parametrize("extra, options", [
    (["--batch-size", "3"], {}), (["--batch-size", "2", "--runtime", "torch"], {"runtime": "torch"}),
    (["--scale", "0.5"], {"scale": 0.5}), (["--size", "40x30", "--batch-size", "4"], {"size": (40, 30)}),
    (["--size", "48"], {"size": 48}),
])
def test_outputs_equal_the_segmenter_with_the_same_options(folder, tmp_path, model_file, capsys, extra, options):
    out = tmp_path / "out"
    status = fastseg_cli("predict", folder, "--out", out, "--model", model_file, "--save", "labels", *extra)
    text = capsys.readouterr().out
    assert status == 1 and "5 segmented" in text and "1 failed" in text  # the broken file alone fails
    seg = Segmenter(fastseg.models.load(model_file), **options)
    got = labels_of(out)
    assert sorted(got) == [f"img{i}.png" for i in range(len(SIZES))]
    for name, labels in got.items():
        np.testing.assert_array_equal(labels, seg.predict(predict.read_image(folder / name)).labels)


@pytest.mark.parametrize("bad", [["--batch-size", "0"], ["--size", "0"], ["--size", "3x"],
                                 ["--scale", "1", "--size", "4"], ["--runtime", "tensorrt"]])
def test_bad_options(folder, tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as stop:
        fastseg_cli("predict", folder, "--out", tmp_path / "out", *bad)
    assert stop.value.code == 2


def test_reduced_precision_refusal_names_the_option(folder, tmp_path, model_file, capsys, monkeypatch):
    monkeypatch.setattr(_torch_compat, "mkldnn_fp16_supported", lambda: False)
    status = fastseg_cli("predict", folder, "--out", tmp_path / "out", "--model", model_file, "--precision", "fp16")
    err = capsys.readouterr().err
    assert status == 2
    assert "--allow-emulated-precision" in err and "allow_emulated_precision=True" not in err


def test_bad_device_is_reported(folder, tmp_path, model_file, capsys):
    assert fastseg_cli("predict", folder, "--out", tmp_path / "out", "--model", model_file, "--device", "gpu") == 2
    assert "device: 'gpu' is not a device" in capsys.readouterr().err
