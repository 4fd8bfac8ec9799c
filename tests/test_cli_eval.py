"""`fastseg eval` against a direct loop over the same CamVid val frames (Segmenter.predict +
ConfusionMatrix), its files, the CRF comparison, and its errors on bad arguments."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastseg.cli import main
from fastseg.commands.evaluate import CRF_DEFAULTS
from fastseg.crf import DenseCRF
from fastseg.data import CamVid
from fastseg.metrics import ConfusionMatrix
from fastseg.segmenter import Segmenter

from _eval_model import save_small_model
from _zoo import one_torch_thread  # noqa: F401  (autouse: numbers, not speed)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_small_model(tmp_path_factory.mktemp("model") / "small.safetensors")


def eval_args(camvid_root, model_file, out, *extra):
    return ["eval", "--dataset", "camvid", "--root", str(camvid_root), "--split", "val",
            "--model", str(model_file), "--out", str(out), "--no-progress", *extra]


def direct_matrices(camvid_root, model_file, frames, crf=None):
    """The loop a user would write: Segmenter.predict on each frame, one meter."""
    val = CamVid(camvid_root, "val")
    seg = Segmenter(model_file, crf=crf)
    meter = ConfusionMatrix(val.num_classes)
    predicted = set()
    for i in frames:
        image, label = val[i]
        labels = seg.predict(image).labels
        predicted |= set(np.unique(labels).tolist())
        meter.update(labels, label)
    return meter.matrix, predicted


def test_eval_matches_direct_loop(camvid_root, model_file, tmp_path, capsys):
    # batches of 2 over 5 frames (the last batch holds one), the Segmenter's default runtime
    assert main(eval_args(camvid_root, model_file, tmp_path, "--limit", "5", "--batch-size", "2")) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "results.json").read_text())
    expected, predicted = direct_matrices(camvid_root, model_file, range(5))
    assert len(predicted) >= 3, "the test model should predict several classes"
    got, expected = np.array(report["results"]["plain"]["confusion_matrix"]), expected.numpy()
    val = CamVid(camvid_root, "val")
    labelled = sum(int((val[i][1] != 255).sum()) for i in range(5))
    # every labelled pixel counted once, under its true class; the predictions equal the loop's, up to
    # the odd pixel where a runtime's kernels depend on the batch size (OpenVINO's: one pixel in 300,000)
    np.testing.assert_array_equal(got.sum(1), expected.sum(1))
    assert got.sum() == labelled
    assert np.abs(got - expected).sum() <= 2e-5 * labelled, "the command's predictions differ from the loop's"
    assert report["frames"] == 5 and report["classes"] == list(CamVid.classes)
    assert "crf" not in report["results"]

    # the scores in the JSON and the printed table are those of the matrix
    from fastseg.metrics import scores_from_matrix

    scores = scores_from_matrix(torch.from_numpy(got))
    assert report["results"]["plain"]["miou"] == pytest.approx(scores.miou)
    assert report["results"]["plain"]["pixel_acc"] == pytest.approx(scores.pixel_acc)
    for i, name in enumerate(CamVid.classes):
        iou = report["results"]["plain"]["per_class"][name]["iou"]
        assert (iou is None) if np.isnan(float(scores.iou[i])) else iou == pytest.approx(float(scores.iou[i]))
        assert name in printed
    assert f"{100 * scores.miou:.2f}" in printed
    assert printed.splitlines()[0] in (tmp_path / "table.txt").read_text()

    with Image.open(tmp_path / "confusion_matrix.png") as im:
        assert im.format == "PNG" and min(im.size) > 400
    assert not list(tmp_path.glob("*.tmp*")), "temporary files left behind"


def test_eval_crf_scores_both_from_one_forward(camvid_root, model_file, tmp_path, capsys):
    frames = [0]  # the CRF costs ~0.5 s a frame
    assert main(eval_args(camvid_root, model_file, tmp_path, "--limit", "1", "--crf")) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    plain, _ = direct_matrices(camvid_root, model_file, frames)
    refined, _ = direct_matrices(camvid_root, model_file, frames, crf=DenseCRF(**CRF_DEFAULTS))
    np.testing.assert_array_equal(np.array(report["results"]["plain"]["confusion_matrix"]), plain.numpy())
    np.testing.assert_array_equal(np.array(report["results"]["crf"]["confusion_matrix"]), refined.numpy())
    assert not np.array_equal(plain.numpy(), refined.numpy()), "the CRF should change some labels"
    assert report["crf"] == CRF_DEFAULTS
    printed = capsys.readouterr().out
    assert "IoU+CRF" in printed and "Bicyclist" in printed
    assert (tmp_path / "confusion_matrix.png").is_file() and (tmp_path / "confusion_matrix_crf.png").is_file()

    # a parameter override reaches the CRF
    out2 = tmp_path / "strong"
    assert main(eval_args(camvid_root, model_file, out2, "--limit", "1", "--crf",
                          "--crf-param", "compat_bilateral=10", "--crf-param", "n_iter=2")) == 0
    report2 = json.loads((out2 / "results.json").read_text())
    assert report2["crf"] == {**CRF_DEFAULTS, "compat_bilateral": 10.0, "n_iter": 2}
    refined2, _ = direct_matrices(camvid_root, model_file, frames,
                                  crf=DenseCRF(**{**CRF_DEFAULTS, "compat_bilateral": 10, "n_iter": 2}))
    np.testing.assert_array_equal(np.array(report2["results"]["crf"]["confusion_matrix"]), refined2.numpy())


@pytest.mark.parametrize("change, message", [
    ({"--root": "{tmp}/nowhere"}, "nowhere"),
    ({"--dataset": "kitti"}, "unknown dataset 'kitti'"),
    ({"--split": "validation"}, "split must be one of"),
    ({"--model": "no_such_model"}, "neither an existing file nor a registered model"),
    ({"--model": "unet_resnet18"}, "needs --num-classes"),
    ({"--model": "{tmp}"}, "is a directory"),
    ({"--limit": "0"}, "--limit: must be >= 1"),
    ({"--batch-size": "0"}, "--batch-size: must be >= 1"),
    ({"--crf-param": "sxy_bilateral=5"}, "--crf-param needs --crf"),
    ({"--crf": None, "--crf-param": "radius=5"}, "expected NAME=VALUE with NAME in"),
    ({"--crf": None, "--crf-param": "n_iter=five"}, "is not a number"),
])
def test_eval_bad_arguments(camvid_root, model_file, tmp_path, capsys, change, message):
    args = dict(zip(["--dataset", "--root", "--split", "--model", "--out"],
                    ["camvid", str(camvid_root), "val", str(model_file), str(tmp_path / "out")]))
    args.update({k: (v.format(tmp=tmp_path) if v else v) for k, v in change.items()})
    argv = ["eval", "--no-progress"] + [x for k, v in args.items() for x in ((k,) if v is None else (k, v))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastseg eval: error: ") and message in err, err
    assert not (tmp_path / "out" / "results.json").exists()


def test_eval_model_of_another_label_set(camvid_root, tmp_path, capsys):
    path = save_small_model(tmp_path / "voc.safetensors", num_classes=21)
    assert main(eval_args(camvid_root, path, tmp_path / "out", "--limit", "1")) == 2
    err = capsys.readouterr().err
    assert "predicts 21 classes but CamVid has 11" in err, err


def test_eval_registered_name_with_num_classes(camvid_root, tmp_path):
    """A registered name with --num-classes runs (random weights): the arguments reach the Segmenter."""
    args = ["eval", "--dataset", "camvid", "--root", str(camvid_root), "--model", "unet_resnet18",
            "--num-classes", "11", "--limit", "1", "--runtime", "torch", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["model"] == "unet_resnet18" and report["runtime"] == "torch" and report["frames"] == 1


def tiny_camvid(root, label: np.ndarray):
    """A one-frame CamVid folder whose val annotation is `label` (raw values as stored)."""
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    h, w = label.shape
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "val" / "a.png")
    Image.fromarray(label).save(root / "valannot" / "a.png")
    return root


def test_annotation_values_outside_the_classes_are_counted_and_reported(model_file, tmp_path, capsys):
    """Values that are neither one of CamVid's classes nor its "Unlabelled" (11) are scored as ignore,
    as before, but no longer silently: a warning names them with their pixel counts."""
    label = np.zeros((48, 64), np.uint8)
    label[:10] = 50   # 640 pixels of another label set
    label[10:13] = 200  # 192 more
    label[13:20] = 11  # Unlabelled: ignored by definition, not reported
    root = tiny_camvid(tmp_path / "camvid", label)
    assert main(eval_args(root, model_file, tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert "832 annotated pixels hold label values outside camvid's 11 classes" in err, err
    assert "50 (640 pixels), 200 (192 pixels)" in err and "11 (" not in err, err
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["labels_outside_classes"] == {"50": 640, "200": 192}
    assert np.array(report["results"]["plain"]["confusion_matrix"]).sum() == 48 * 64 - 832 - 7 * 64

    label[:13] = 0  # only classes and Unlabelled: no warning
    clean = tiny_camvid(tmp_path / "clean", label)
    assert main(eval_args(clean, model_file, tmp_path / "out2")) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "out2" / "results.json").read_text())["labels_outside_classes"] == {}


def test_eval_without_matplotlib_writes_results_and_exits_0(model_file, tmp_path):
    """matplotlib made unimportable in a fresh process: the scores are written, the picture is skipped
    with a warning, and the exit status is 0 (no traceback)."""
    import subprocess
    import sys

    root = tiny_camvid(tmp_path / "camvid", np.zeros((48, 64), np.uint8))
    argv = eval_args(root, model_file, tmp_path / "out")
    code = ("import sys\nsys.modules['matplotlib'] = None  # import matplotlib now raises ImportError\n"
            "from fastseg.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "confusion_matrix.png not drawn" in run.stderr, run.stderr
    assert "matplotlib" in run.stderr
    assert (tmp_path / "out" / "results.json").is_file() and (tmp_path / "out" / "table.txt").is_file()
    assert not (tmp_path / "out" / "confusion_matrix.png").exists()
    assert "confusion_matrix" not in run.stdout.splitlines()[-1]
