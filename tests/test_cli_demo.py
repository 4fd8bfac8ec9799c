"""`fastseg demo` end to end on real CamVid frames, and the packaged default model behind it."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

import fastseg
from fastseg.commands import demo
from fastseg.models import pretrained
from fastseg.segmenter import Segmenter

from _cli import fastseg_cli
from _images import image


def test_demo_writes_its_pictures(tmp_path, camvid_root, capsys):
    out = tmp_path / "demo"
    assert fastseg_cli("demo", "--root", camvid_root, "--out", out, "--frames", 3) == 0
    text = capsys.readouterr().out
    assert str(camvid_root / "val") in text                    # says what the input was
    assert "packaged model 'camvid'" in text
    assert "ms per 480x360 frame" in text
    assert "without CRF: mIoU" in text and "with CRF   : mIoU" in text
    assert sorted(p.name for p in out.iterdir()) == ["crf_boundaries.png", "segmentation.png"]
    with Image.open(out / "segmentation.png") as im:
        assert im.width >= 4 * 480 and im.height >= 3 * 360        # 3 rows of 4 full-size panels
    with Image.open(out / "crf_boundaries.png") as im:
        assert im.width > 1000 and im.height > 3 * 250


def test_demo_says_where_camvid_is_missing(tmp_path, capsys):
    assert fastseg_cli("demo", "--root", tmp_path / "nowhere", "--out", tmp_path / "demo") == 1
    assert "CamVid not found" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_find_camvid_from_the_repository(camvid_root, monkeypatch, tmp_path):
    monkeypatch.delenv("FASTSEG_SHARED", raising=False)
    monkeypatch.chdir(tmp_path)                                 # not from the current folder ...
    found = demo.find_camvid(None)                              # ... but next to the checkout
    assert found is not None and (found / "val").is_dir()
    assert demo.find_camvid(tmp_path) is None


def test_segmenter_without_arguments_runs_the_packaged_model():
    frame = image(72, 96, seed=4)
    model = pretrained.load()
    assert next(model.parameters()).dtype == torch.float32      # fp16 on disk, fp32 to run
    with torch.no_grad():
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
        x = (x - torch.tensor(model.mean).view(1, 3, 1, 1)) / torch.tensor(model.std).view(1, 3, 1, 1)
        expected = model.predict(x)[0].numpy()
    for seg in (Segmenter(scale=1), Segmenter("camvid", scale=1)):  # at the frame's own size
        labels = seg.predict(frame).labels
        assert (labels == expected).mean() >= 0.999
    assert Segmenter().scaling.trained == (360, 480)  # by default, towards the size it was trained at
    info = pretrained.get()
    assert info.path.is_file() and info.classes == fastseg.data.CamVid.classes
    assert len(info.palette) == 11


def test_missing_packaged_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="packaged model 'camvid' is missing"):
        Segmenter()
    with pytest.raises(ValueError, match="unknown packaged model"):
        pretrained.get("nope")
    with pytest.raises(ValueError, match="num_classes"):
        Segmenter("camvid", num_classes=3)


def test_package_data_ships_the_weights():
    """setup.py's package_data carries fastseg/weights/*.safetensors (and the card) into wheels;
    they must stay under 10 MB, so that every install (and every clone) can carry the default model."""
    from pathlib import Path

    setup = (Path(fastseg.__file__).resolve().parents[1] / "setup.py").read_text()
    assert '"weights/*.safetensors"' in setup and '"weights/*.json"' in setup
    assert pretrained.get().path.stat().st_size <= 10 * 2**20
