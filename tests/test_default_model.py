"""The packaged default model really segments: Segmenter() on real CamVid val frames.

It trained on them (train + val, MODEL_CARD.md), so this is no score: a wrong file, a preprocessing
mismatch (mean/std, RGB order) or a broken fused tail would fall far below the bound here."""
from __future__ import annotations

import json

import numpy as np
import pytest

import fastseg
from fastseg.data import CamVid
from fastseg.metrics import ConfusionMatrix
from fastseg.models import pretrained


@pytest.fixture(scope="module")
def segmenter():
    return fastseg.Segmenter()


def test_default_model_is_small_fp16_and_has_a_card():
    info = pretrained.get()
    assert info.path.stat().st_size <= 10 * 1024 * 1024
    from safetensors import safe_open

    with safe_open(str(info.path), framework="pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys() if "num_batches" not in k} == {"torch.float16"}
    card = json.loads(info.card_path.read_text())
    assert card["training"]["splits"] and card["holdout"]["sequence"]
    for run in card["recipe_runs"]:  # held-out figures of the recipes, per class
        assert set(run["holdout_iou"]) == set(CamVid.classes) and 0 < run["holdout_miou"] < 1
    assert sum(run["shipped"] for run in card["recipe_runs"]) == 1
    assert card["crf"] == info.crf  # the card records the CRF setting the package ships


def test_default_model_segments_camvid_val(camvid_root, segmenter):
    val = CamVid(camvid_root, "val")
    meter = ConfusionMatrix(val.num_classes)
    picks = range(0, len(val), 10)
    images = [val.read_image(i) for i in picks]
    labels = segmenter.predict(images).labels   # a list of frames in one call -> a list of labels
    for label, i in zip(labels, picks):
        assert label.shape == images[0].shape[:2] and label.dtype == np.uint8
        meter.update(label, val.read_label(i))
    scores = meter.compute()
    assert scores.miou >= 0.5, scores.table(val.classes)
    assert scores.pixel_acc >= 0.85
