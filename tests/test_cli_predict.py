"""`fastseg predict`: outputs equal the Segmenter's, bad files reported, resumable, atomic, names kept apart."""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastseg
from fastseg import viz
from fastseg.commands import _inputs, predict
from fastseg.segmenter import Segmenter

from _cli import NUM_CLASSES, fastseg_cli, read_png, write_image
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

SIZES = [(90, 120), (64, 64), (77, 101), (120, 90), (33, 47)]


@pytest.fixture
def folder(tmp_path):
    """Five images of different sizes (two in a sub-folder), a corrupt PNG, a text file."""
    src = tmp_path / "in"
    for i, (h, w) in enumerate(SIZES):
        write_image(src / ("sub" if i >= 3 else "") / f"img{i}.png", h, w, seed=i)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    (src / "notes.txt").write_text("not an image")
    return src


def outputs(out, kind="labels"):
    return sorted(p.relative_to(out / kind).as_posix() for p in (out / kind).rglob("*") if p.is_file())


def all_files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_outputs_equal_the_segmenter_and_the_bad_file_is_reported(folder, tmp_path, model_file, capsys):
    out = tmp_path / "out"
    status = fastseg_cli("predict", folder, "--recursive", "--out", out, "--model", model_file)
    text = capsys.readouterr()
    assert status == 1                                        # one image failed
    assert "broken.png" in text.out and "1 failed" in text.out and "5 segmented" in text.out
    assert "1 non-image file ignored" in text.out          # notes.txt is not an image: not an error
    expected = ["img0.png", "img1.png", "img2.png", "sub/img3.png", "sub/img4.png"]
    for kind in predict.KINDS:
        assert outputs(out, kind) == expected

    seg = Segmenter(fastseg.models.load(model_file))
    palette = viz.default_palette(NUM_CLASSES)
    seen = set()
    for name in expected:
        image = predict.read_image(folder / name)
        labels = seg.predict(image).labels
        seen |= set(np.unique(labels).tolist())
        np.testing.assert_array_equal(read_png(out / "labels" / name), labels)
        np.testing.assert_array_equal(read_png(out / "color" / name), viz.colorize(labels, palette))
        np.testing.assert_array_equal(read_png(out / "overlay" / name), viz.overlay(image, labels, palette, 0.5))
    assert len(seen) >= 3, "the test model should predict varied labels"
    assert not [n for n in all_files(out) if n.endswith(".tmp")]


def test_label_png_is_a_palette_image_of_class_ids(folder, tmp_path, model_file):
    out = tmp_path / "out"
    fastseg_cli("predict", folder / "img0.png", "--out", out, "--model", model_file, "--save", "labels")
    from PIL import Image

    with Image.open(out / "labels" / "img0.png") as im:
        assert im.mode == "P"  # viewers show the class colours; the pixel values are the ids
        palette = np.array(im.getpalette()[: 3 * NUM_CLASSES]).reshape(-1, 3)
    np.testing.assert_array_equal(palette, viz.default_palette(NUM_CLASSES))
    assert outputs(out, "labels") == ["img0.png"] and not (out / "color").exists()


def test_interrupted_run_resumes_without_redoing_finished_images(folder, tmp_path, model_file, monkeypatch):
    (folder / "broken.png").unlink()
    out = tmp_path / "out"
    real_write, calls = predict.write_outputs, []

    def write_then_interrupt(paths, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C arrived while the third image was being written
        calls.append(paths)
        real_write(paths, *args)

    monkeypatch.setattr(predict, "write_outputs", write_then_interrupt)
    assert fastseg_cli("predict", folder, "-r", "--out", out, "--model", model_file) == 130
    done = outputs(out)
    assert done == ["img0.png", "img1.png"]
    assert not [n for n in all_files(out) if n.endswith(".tmp")]
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.png")}

    monkeypatch.setattr(predict, "write_outputs", real_write)
    assert fastseg_cli("predict", folder, "-r", "--out", out, "--model", model_file) == 0
    assert outputs(out) == ["img0.png", "img1.png", "img2.png", "sub/img3.png", "sub/img4.png"]
    for path, stamp in before.items():   # finished files were not rewritten
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, path


def test_partial_outputs_are_redone_and_complete_ones_skipped(folder, tmp_path, model_file, capsys):
    (folder / "broken.png").unlink()
    out = tmp_path / "out"
    assert fastseg_cli("predict", folder, "--out", out, "--model", model_file) == 0
    (out / "overlay" / "img1.png").unlink()                   # img1 lost one of its three outputs
    stamp = (out / "labels" / "img0.png").stat().st_mtime_ns
    capsys.readouterr()
    assert fastseg_cli("predict", folder, "--out", out, "--model", model_file) == 0
    text = capsys.readouterr().out
    assert "2 already done, skipped" in text and "1 segmented" in text
    assert (out / "overlay" / "img1.png").exists()
    assert (out / "labels" / "img0.png").stat().st_mtime_ns == stamp
    assert fastseg_cli("predict", folder, "--out", out, "--model", model_file, "--overwrite") == 0
    assert (out / "labels" / "img0.png").stat().st_mtime_ns != stamp


def test_same_names_in_different_folders_do_not_collide(tmp_path, model_file):
    a = write_image(tmp_path / "a" / "frame.png", 40, 60, seed=1)
    b = write_image(tmp_path / "b" / "frame.png", 40, 60, seed=2)
    write_image(tmp_path / "b" / "frame.jpg", 40, 60, seed=3)
    out = tmp_path / "out"
    assert fastseg_cli("predict", tmp_path / "a", tmp_path / "b", "--out", out, "--model", model_file) == 0
    assert outputs(out) == ["a/frame.png", "b/frame.jpg.png", "b/frame.png.png"]
    seg = Segmenter(fastseg.models.load(model_file))
    for src, name in ((a, "a/frame.png"), (b, "b/frame.png.png")):
        np.testing.assert_array_equal(read_png(out / "labels" / name), seg.predict(predict.read_image(src)).labels)


def test_globs_missing_inputs_and_the_output_folder_inside_the_input(tmp_path, model_file, capsys):
    for i in range(3):
        write_image(tmp_path / "frames" / f"f{i}.png", 32, 48, seed=i)
    write_image(tmp_path / "frames" / "other.jpg", 32, 48, seed=9)
    out = tmp_path / "frames" / "seg"        # inside the input folder: its files must not become inputs
    status = fastseg_cli("predict", str(tmp_path / "frames" / "f*.png"), tmp_path / "nope.png",
                         "--out", out, "--model", model_file, "--save", "labels")
    assert status == 1                        # a missing input is a failure ...
    assert outputs(out) == ["f0.png", "f1.png", "f2.png"]   # ... but the others are done
    assert "nope.png" in capsys.readouterr().err
    status = fastseg_cli("predict", tmp_path / "frames", "-r", "--out", out, "--model", model_file,
                         "--save", "labels")
    assert status == 0
    assert outputs(out) == ["f0.png", "f1.png", "f2.png", "other.png"]


def test_find_inputs_keys(tmp_path):
    for rel in ("x/a.png", "x/deep/b.jpg", "y/a.png", "y/a.jpeg", "y/.hidden.png", "y/readme.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = _inputs.find_inputs([str(tmp_path / "x"), str(tmp_path / "y")], recursive=True)
    assert [s.key for s in found.sources] == ["x/a", "x/deep/b", "y/a.jpeg", "y/a.png"]
    assert found.ignored == 1 and found.missing == []
    found = _inputs.find_inputs([str(tmp_path / "x")], recursive=False)
    assert [s.key for s in found.sources] == ["a"]
    found = _inputs.find_inputs([str(tmp_path / "x" / "**" / "*.jpg")])
    assert [s.key for s in found.sources] == ["deep/b"]


def test_usage_errors(tmp_path, model_file, capsys):
    write_image(tmp_path / "a.png", 32, 32, seed=0)
    with pytest.raises(SystemExit):
        fastseg_cli("predict", tmp_path / "a.png", "--out", tmp_path / "o", "--save", "labels,masks")
    assert fastseg_cli("predict", tmp_path / "empty*.png", "--out", tmp_path / "o") == 1
    assert "no images" in capsys.readouterr().err
    assert fastseg_cli("predict", tmp_path / "a.png", "--out", tmp_path / "o", "--model", "no_such_model") == 2
    assert "not a packaged model" in capsys.readouterr().err


def test_default_model_labels_equal_segmenter(tmp_path, camvid_root):
    frame = sorted((camvid_root / "val").glob("*.png"))[0]
    out = tmp_path / "out"
    assert fastseg_cli("predict", frame, "--out", out, "--save", "labels,color") == 0
    labels = Segmenter().predict(predict.read_image(frame)).labels
    np.testing.assert_array_equal(read_png(out / "labels" / f"{frame.stem}.png"), labels)
    from fastseg.data.camvid import PALETTE

    np.testing.assert_array_equal(read_png(out / "color" / f"{frame.stem}.png"), viz.colorize(labels, PALETTE))


def test_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path):
    from fastseg._atomic import atomic_write

    path = tmp_path / "x.png"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as f:
            f.write(b"half of the new")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.png"]
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["x.png"]
    umask = os.umask(0)
    os.umask(umask)
    with atomic_write(tmp_path / "new.png") as f:
        f.write(b"x")
    assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o666 & ~umask   # as open() would make it


def test_unwritable_out_is_refused_before_the_model_loads(folder, tmp_path, model_file, capsys, monkeypatch):
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(predict, "choose_model", no_model)
    assert fastseg_cli("predict", folder, "--out", blocker, "--model", model_file) == 2
    assert "--out: cannot write to" in capsys.readouterr().err
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "color").write_text("a file where a kind's folder should be")
    assert fastseg_cli("predict", folder, "--out", tmp_path / "out2", "--model", model_file) == 2
    assert str(tmp_path / "out2" / "color") in capsys.readouterr().err


def test_temporaries_of_a_killed_run_are_removed(folder, tmp_path, model_file, capsys):
    """A writer killed by SIGKILL inside atomic_write leaves its temporary file; the next run removes
    it, but not the temporary of a writer that is still running (this process)."""
    import subprocess
    import sys

    out = tmp_path / "out"
    killed = ("import os, signal, sys\nfrom fastseg._atomic import atomic_write\n"
              "with atomic_write(sys.argv[1]) as f:\n    f.write(b'half')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", killed, str(out / "labels" / "img0.png")])
    assert done.returncode == -9
    left = [p for p in (out / "labels").iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and not (out / "labels" / "img0.png").exists()
    live = out / "color" / f".img1.png.{os.getpid()}-0123abcd.tmp"
    live.parent.mkdir(parents=True)
    live.write_bytes(b"being written")
    assert fastseg_cli("predict", folder, "--out", out, "--model", model_file) == 1  # broken.png fails
    assert "removed 1 temporary file" in capsys.readouterr().out
    assert not left[0].exists() and live.exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p != live]
