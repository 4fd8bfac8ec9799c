"""`fastseg demo` end to end on real CamVid frames, and the packaged default model behind it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import fastseg
from fastseg.commands import _demo_frames as demo_frames
from fastseg.commands import demo
from fastseg.models import pretrained
from fastseg.segmenter import Segmenter

from _cli import fastseg_cli
from _images import image


def test_demo_writes_its_pictures(tmp_path, camvid_root, capsys):
    out = tmp_path / "demo"
    assert fastseg_cli("demo", "--root", camvid_root, "--out", out, "--frames", 3) == 0
    text = capsys.readouterr().out
    assert str(camvid_root) in text and "not used in training" in text     # says what the input was
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


def test_demo_runs_on_the_packaged_frames_without_camvid(tmp_path, monkeypatch, capsys):
    """A fresh machine without ../shared: the frames the package ships, minus those the model trained on."""
    monkeypatch.setattr(demo, "find_camvid", lambda root: None)
    out = tmp_path / "demo"
    assert fastseg_cli("demo", "--out", out, "--frames", 6) == 0
    text = capsys.readouterr().out
    pool = demo_frames.split_by_training(demo_frames.packaged_frames(), pretrained.get().card())
    assert str(demo_frames.PACKAGED) in text and f"{len(pool.unseen)} CamVid frames" in text
    if pool.seen:
        assert f"the other {pool.seen} frames there" in text
    assert sorted(p.name for p in out.iterdir()) == ["crf_boundaries.png", "segmentation.png"]


def test_packaged_frames_are_small_real_and_labelled():
    frames = demo_frames.packaged_frames()
    assert len(frames) >= 4 and len({f.street for f in frames}) >= 2
    assert sum(p.stat().st_size for p in demo_frames.PACKAGED.iterdir()) <= 2**20   # at most 1 MB in all
    for f in frames:
        image, truth = f.read()
        assert image.shape == (360, 480, 3) and truth.shape == (360, 480)
        assert set(np.unique(truth)) <= set(range(11)) | {255} and len(np.unique(truth)) >= 4


def test_trained_frames_are_never_shown_as_unseen(tmp_path):
    frames = [demo_frames.DemoFrame(f"{street}_{i:05d}", split, tmp_path / "x.png", tmp_path / "y.png")
              for street, split in (("0001TP", "train"), ("0006R0", "train"), ("0016E5", "val"))
              for i in range(10)]
    card = {"training": {"splits": ["train"], "excluded_frames": ["0006R0_00003"]}}
    pool = demo_frames.split_by_training(frames, card)
    assert pool.known and pool.seen == 19
    assert sorted(f.name for f in pool.unseen) == ["0006R0_00003"] + [f"0016E5_{i:05d}" for i in range(10)]
    everything = {"training": {"splits": ["train", "val"], "excluded_frames": []}}
    assert demo_frames.split_by_training(frames, everything).unseen == []
    unknown = demo_frames.split_by_training(frames, None)
    assert not unknown.known and len(unknown.unseen) == 30


def test_demo_frames_spread_over_the_streets(tmp_path):
    frames = [demo_frames.DemoFrame(f"{street}_{i:05d}", "val", tmp_path / "x", tmp_path / "y")
              for street, n in (("A", 20), ("B", 3), ("C", 1)) for i in range(n)]
    for count in (1, 3, 5, 24, 40):
        picked = demo_frames.pick(frames, count)
        assert len(picked) == min(count, 24) and len(set(picked)) == len(picked)
        assert len({f.street for f in picked}) == min(count, 3)


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
