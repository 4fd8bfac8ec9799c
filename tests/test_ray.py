"""`fastseg predict / eval --ray` and fastseg.distributed.predict_dataset on a local Ray instance with
2 CPUs (one per module): the same outputs as the single-process commands, file for file and matrix
for matrix; a worker killed mid-run loses nothing; a re-run does nothing; a corrupt image is reported.

Each worker runs 1 torch thread and the single-process references run with --threads 1, so both
compute every frame the same way and the results can be compared exactly."""
from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from fastseg.cli import build_parser

from _cli import fastseg_cli, read_png

FRAMES = 40
EVAL_FRAMES = 8


def _ray():
    """ray, or a skip (a failure in CI, whose test extra installs it)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        import ray
        import ray.data  # noqa: F401

        return ray
    pytest.importorskip("ray.data")
    return pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance():
    ray = _ray()
    from fastseg.distributed.ray_cluster import quiet

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    quiet(ray)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def torch_threads():
    """The single-process commands set torch's thread count (--threads 1): give it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(camvid_root, tmp_path_factory):
    """40 CamVid val frames in frames/, and a corrupt PNG in bad/."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "frames").mkdir()
    for path in sorted((camvid_root / "val").glob("*.png"))[:FRAMES]:
        shutil.copy(path, root / "frames" / path.name)
    (root / "bad").mkdir()
    (root / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture(scope="module")
def single_process(inputs, tmp_path_factory):
    """The single-process command's outputs for the frames and the corrupt file."""
    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    try:
        assert fastseg_cli("predict", inputs / "frames", inputs / "bad", "--out", out, "--threads", 1) == 1
    finally:
        torch.set_num_threads(threads)
    return out


def files(out) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_predict_on_ray_equals_single_process_file_for_file(ray_instance, inputs, single_process, tmp_path, capsys):
    out = tmp_path / "ray"
    status = fastseg_cli("predict", inputs / "frames", inputs / "bad", "--out", out, "--ray", "--workers", 2)
    printed = capsys.readouterr()
    assert status == 1, "the corrupt image failed: exit status 1"
    assert "bad/broken.png: cannot read the image" in printed.err
    assert f"done: {FRAMES} segmented" in printed.out and "1 failed" in printed.out
    ours, reference = files(out), files(single_process)
    assert len(ours) == 3 * FRAMES and sorted(ours) == sorted(reference)
    different = [name for name in ours if ours[name] != reference[name]]
    assert not different, different[:5]


def test_a_killed_worker_loses_nothing_and_a_rerun_does_nothing(ray_instance, inputs, single_process, tmp_path,
                                                                 capsys):
    from fastseg.distributed import ray_predict

    out = tmp_path / "ray"
    args = build_parser("predict").parse_args(["predict", str(inputs / "frames"), "--out", str(out), "--save", "labels",
                                               "--ray", "--workers", "2"])
    killed, workers = [], set()

    def kill_the_first_worker(row):
        workers.add(int(row["worker"]))
        if not killed:  # a real process kill: SIGKILL, no chance to clean up
            killed.append(int(row["worker"]))
            os.kill(killed[0], signal.SIGKILL)

    assert ray_predict.run(args, on_result=kill_the_first_worker) == 0
    assert killed and len(workers - set(killed)) >= 1, "the images came back from more than the killed worker"
    labels = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert labels == sorted(f"labels/{p.stem}.png" for p in (inputs / "frames").glob("*.png")), \
        "every output complete, no temporary file left"
    for name in labels:  # each a complete PNG with the single-process labels
        np.testing.assert_array_equal(read_png(out / name), read_png(single_process / "labels" / "frames" / name[7:]))

    capsys.readouterr()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert fastseg_cli("predict", inputs / "frames", "--out", out, "--save", "labels", "--ray", "--workers", 2) == 0
    assert f"{FRAMES} already done, skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps, "a re-run changes nothing"


def test_eval_on_ray_sums_to_the_single_process_matrix(ray_instance, camvid_root, tmp_path):
    common = ["eval", "--dataset", "camvid", "--root", camvid_root, "--split", "val", "--limit", EVAL_FRAMES,
              "--no-progress"]
    assert fastseg_cli(*common, "--out", tmp_path / "ray", "--ray", "--workers", 2) == 0
    assert fastseg_cli(*common, "--out", tmp_path / "one", "--threads", 1) == 0
    ours = json.loads((tmp_path / "ray" / "results.json").read_text())
    reference = json.loads((tmp_path / "one" / "results.json").read_text())
    a = np.array(ours["results"]["plain"]["confusion_matrix"], dtype=np.int64)
    b = np.array(reference["results"]["plain"]["confusion_matrix"], dtype=np.int64)
    np.testing.assert_array_equal(a, b)
    assert (a > 0).sum() > 11 and ours["frames"] == EVAL_FRAMES and ours["processes"] == 2
    assert ours["results"]["plain"]["miou"] == reference["results"]["plain"]["miou"]
    assert (tmp_path / "ray" / "confusion_matrix.png").is_file()


def test_predict_dataset_adds_the_segmenters_labels(ray_instance, inputs):
    import fastseg
    from fastseg.distributed import predict_dataset

    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((inputs / "frames").glob("*.png"))[:4]]
    frames[1] = frames[1][:200, :300].copy()  # rows of different sizes
    dataset = ray_instance.data.from_items([{"image": f, "name": str(i)} for i, f in enumerate(frames)])
    rows = sorted(predict_dataset(dataset, workers=1, threads=1).iter_rows(), key=lambda r: int(r["name"]))
    torch.set_num_threads(1)
    seg = fastseg.Segmenter()
    for frame, row in zip(frames, rows):
        assert row["labels"].shape == frame.shape[:2] and row["labels"].dtype == np.uint8
        np.testing.assert_array_equal(row["labels"], seg.predict(frame).labels)


def test_without_ray_the_option_says_how_to_get_it(monkeypatch, inputs, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert fastseg_cli("predict", inputs / "frames", "--out", tmp_path, "--ray") == 2
    assert 'pip install "fastseg-engine[ray]"' in capsys.readouterr().err


def test_an_input_after_ray_is_not_taken_for_an_address(inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        fastseg_cli("predict", "--out", tmp_path, "--ray", inputs / "frames")
    assert exit_.value.code == 2 and "is not a Ray address" in capsys.readouterr().err


def test_urls_are_read_and_written_through_pyarrow(ray_instance, inputs, single_process, tmp_path, capsys):
    """file:// URLs take the object-store path (pyarrow.fs listing, reads, whole writes)."""
    source = tmp_path / "in"
    source.mkdir()
    for path in sorted((inputs / "frames").glob("*.png"))[:3]:
        shutil.copy(path, source / path.name)
    shutil.copy(inputs / "bad" / "broken.png", source / "broken.png")
    out = tmp_path / "out"
    command = ("predict", f"file://{source}", "--out", f"file://{out}", "--save", "labels", "--ray")
    assert fastseg_cli(*command) == 1
    assert "broken.png: cannot read the image: cannot identify image file" in capsys.readouterr().err
    written = sorted(p.name for p in (out / "labels").iterdir())
    assert written == sorted(p.name for p in source.glob("0*.png"))
    for name in written:
        np.testing.assert_array_equal(read_png(out / "labels" / name),
                                      read_png(single_process / "labels" / "frames" / name))
    assert fastseg_cli(*command) == 1  # the corrupt file again; the others skipped
    assert "3 already done, skipped" in capsys.readouterr().out


def test_worker_options_without_ray_are_refused(inputs, tmp_path, capsys):
    assert fastseg_cli("predict", inputs / "frames", "--out", tmp_path, "--workers", 4) == 2
    assert "need --ray" in capsys.readouterr().err
    assert fastseg_cli("eval", "--dataset", "camvid", "--root", tmp_path, "--cpus-per-worker", 2) == 2
    assert "need --ray" in capsys.readouterr().err
