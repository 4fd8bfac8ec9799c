"""Video in `fastseg predict` and `Segmenter.stream`: a video made from real CamVid frames keeps its
frame count and rate and gets the Segmenter's labels frame by frame; a damaged video keeps the frames
before the damage and fails the run; a live source faster than the model drops its stale frames and
its latency stays bounded."""
from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from fastseg import bench
from fastseg.bench.measure import Figure
from fastseg.cli import main
from fastseg.commands import demo
from fastseg.segmenter import Segmenter
from fastseg.video import VideoDecodeError, VideoReader, picture_writer, read_labels
from fastseg.video.sources import Latest, paced, timestamped

from _cli import fastseg_cli
from _images import image
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

pytest.importorskip("av")
FPS = Fraction(15)


def camvid_frames(camvid_root, n, size=(240, 180)):
    files = sorted((camvid_root / "val").glob("*.png"))[:n]
    return [np.asarray(Image.open(f).convert("RGB").resize(size, Image.BILINEAR)) for f in files]


def write_video(path, frames, fps=FPS):
    h, w = frames[0].shape[:2]
    with picture_writer(path, w, h, fps) as video:
        for frame in frames:
            video.write(frame)
    return path


def decoded(path):
    with VideoReader(path) as video:
        return video.info, [frame for _, frame in video]


def test_predict_a_video_of_real_frames(camvid_root, model_file, tmp_path, capsys):
    src = tmp_path / "in"
    frames = camvid_frames(camvid_root, 8)
    write_video(src / "drive.mp4", frames)
    Image.fromarray(frames[0]).save(src / "still.png")
    gif = [Image.fromarray(f[::2, ::2]) for f in frames[:3]]
    gif[0].save(src / "anim.gif", save_all=True, append_images=gif[1:], duration=100, loop=0)
    out = tmp_path / "out"
    assert fastseg_cli("predict", src, "--out", out, "--model", model_file) == 0

    info, inputs = decoded(src / "drive.mp4")
    overlay_info, overlays = decoded(out / "overlay" / "drive.mp4")
    assert len(overlays) == len(inputs) == 8
    assert (overlay_info.width, overlay_info.height, overlay_info.fps) == (240, 180, FPS)
    labels = list(read_labels(out / "labels" / "drive.mkv"))
    assert len(labels) == 8
    seg = Segmenter(str(model_file))
    for frame, got in zip(inputs, labels):
        np.testing.assert_array_equal(got, seg.predict(frame).labels)
    assert (out / "labels" / "still.png").exists()
    assert len(list(read_labels(out / "labels" / "anim.mkv"))) == 3    # an animated GIF is a video
    assert decoded(out / "color" / "anim.mp4")[0].fps == 10

    capsys.readouterr()
    before = (out / "labels" / "drive.mkv").stat().st_mtime_ns
    assert fastseg_cli("predict", src, "--out", out, "--model", model_file) == 0
    assert "3 already done" in capsys.readouterr().out                   # a re-run skips finished videos
    assert (out / "labels" / "drive.mkv").stat().st_mtime_ns == before
    assert not [p for p in out.rglob(".*") if p.is_file()]              # no temporaries left


def test_a_damaged_video_keeps_its_first_frames_and_fails(model_file, tmp_path, capsys):
    src = tmp_path / "in"
    frames = [image(64, 96, seed=i) for i in range(30)]
    whole = write_video(tmp_path / "whole.mkv", frames).read_bytes()
    src.mkdir()
    (src / "cut.mkv").write_bytes(whole[: len(whole) // 2])       # decodes to its end without an error
    with pytest.raises(VideoDecodeError, match="truncated"), VideoReader(src / "cut.mkv") as video:
        for _ in video:
            pass
    kept = video.frames_read
    assert 0 < kept < 30
    (src / "empty.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    out = tmp_path / "out"
    assert fastseg_cli("predict", src, "--out", out, "--model", model_file) == 1
    text = capsys.readouterr()
    assert "cut.mkv" in text.err and "truncated" in text.err and "empty.mp4" in text.err
    assert len(list(read_labels(out / "labels" / "cut.mkv"))) == kept  # the frames before the damage
    assert len(decoded(out / "overlay" / "cut.mp4")[1]) == kept
    assert not (out / "labels" / "empty.mkv").exists()                 # nothing decoded: no output


def camera(frames, fps, count, clock=time.perf_counter):
    """A simulated camera: `count` frames at `fps`, each stamped when it is captured."""
    start = clock()
    for i in range(count):
        wait = start + i / fps - clock()
        if wait > 0:
            time.sleep(wait)
        yield clock(), frames[i % len(frames)]


def test_live_source_faster_than_the_model(model_file, monkeypatch):
    seg = Segmenter(str(model_file), runtime="torch")
    model_time = 0.1  # three source intervals at 30 fps
    forward = seg.runtime._forward
    monkeypatch.setattr(seg.runtime, "_forward", lambda x: (time.sleep(model_time), forward(x))[1])
    frames = [image(48, 64, seed=i) for i in range(3)]
    stream = seg.stream(camera(frames, 30, 60), live=True)
    results = [(r.timestamp, r.latency, r.timings["total"]) for r in stream]
    stamps, latency, busy = (np.array(v) for v in zip(*results))
    assert stream.received == 60 and stream.dropped > 30
    assert stream.processed == len(results) == stream.received - stream.dropped
    assert (np.diff(stamps) > 0).all()                  # always a newer frame
    # a frame waits at most one source interval for the model, then the model's time: no growth
    # (+ 0.1 s for a busy shared machine; a queue that kept every frame would reach ~4 s by the end)
    bound = busy.max() + 1 / 30 + 0.1
    assert np.percentile(latency, 99) <= bound, (latency, bound)
    assert latency[-5:].mean() <= bound


def test_stream_sources_and_timestamps(model_file):
    seg = Segmenter(str(model_file), runtime="torch")
    frames = [image(32, 48, seed=i) for i in range(3)]
    given = list(seg.stream([(10.0, frames[0]), (11.5, frames[1])], clock=lambda: 12.0))
    assert [(r.timestamp, r.latency) for r in given] == [(10.0, 2.0), (11.5, 0.5)]
    bare = list(seg.stream(iter(frames)))
    assert all(0 <= r.latency < 5 for r in bare) and bare[0].frame is frames[0]
    assert [t for t, _ in timestamped([(1, "a"), "b"], clock=lambda: 7.0)] == [1.0, 7.0]
    # a file played live: each frame at its time; one decoded after the next was due is skipped
    class Frame:
        converted: list = []

        def __init__(self, name):
            self.name = name

        def to_ndarray(self, format):
            Frame.converted.append(self.name)
            return self.name

    class Reader:
        info = type("Info", (), {"fps": Fraction(2)})
        skipping: list = []

        def skip_nonreference(self, skip):
            self.skipping.append(skip)

        def decoded(self):
            for t, name in [(0.0, "a"), (0.5, "b"), (1.0, "slow"), (1.5, "late"), (2.0, "c")]:
                if name == "slow":
                    now[0] += 1.2  # this frame takes long to decode
                yield t, Frame(name)

    now, skipped = [0.0], []
    played = list(paced(Reader(), clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
                        skipped=lambda: skipped.append(now[0])))
    assert Frame.converted == []  # converted to RGB only when taken
    # "slow" is ready at 1.7 s, after "late" was due (1.5 s): skipped; "late" is still the newest
    assert [(t, f.rgb()) for t, f in played] == [(0.0, "a"), (0.5, "b"), (1.5, "late"), (2.0, "c")]
    assert skipped == [1.7]
    assert Reader.skipping == [False, False, True, False, False]  # B-frames skipped while behind


def test_stream_of_a_file_equals_predict(tmp_path, model_file):
    frames = [image(48, 64, seed=i) for i in range(5)]
    path = write_video(tmp_path / "v.mp4", frames)
    seg = Segmenter(str(model_file))
    _, inputs = decoded(path)
    results = [(r.labels.copy(), r.timestamp) for r in seg.stream(str(path))]
    assert len(results) == 5
    for frame, (labels, _) in zip(inputs, results):
        np.testing.assert_array_equal(labels, seg.predict(frame).labels)
    assert [t for _, t in results] == pytest.approx([i / 15 for i in range(5)])  # the file's own times


def test_latest_keeps_only_the_newest():
    def source():
        yield from range(5)
        time.sleep(0.05)
        yield 5
    latest = Latest(source())
    time.sleep(0.03)          # 0..4 arrive before the consumer looks: only 4 is left
    assert list(latest) == [4, 5] and (latest.received, latest.dropped) == (6, 4)


def test_stream_of_a_file_played_live(model_file, tmp_path):
    frames = [image(48, 64, seed=i) for i in range(6)]
    path = write_video(tmp_path / "clip.mp4", frames)
    _, rgb = decoded(path)
    seg = Segmenter(str(model_file), ort_spinning=False)
    with seg.stream(str(path), live=True) as stream:
        results = [(r.frame, r.labels.copy(), r.timings) for r in stream]
    assert 1 <= len(results) <= 6 and stream.received == 6
    for frame, labels, timings in results:  # each taken frame: RGB, as decoded, and its conversion timed
        assert any(np.array_equal(frame, x) for x in rgb) and frame.dtype == np.uint8
        np.testing.assert_array_equal(labels, seg.predict(frame).labels)
        assert 0 < timings["convert"] <= timings["total"]


def test_predict_live_plays_a_file_at_its_rate(model_file, tmp_path, capsys):
    frames = [image(48, 64, seed=i) for i in range(12)]
    path = write_video(tmp_path / "clip.mp4", frames)
    out = tmp_path / "out"
    start = time.perf_counter()
    assert fastseg_cli("predict", "--live", path, "--out", out, "--model", model_file) == 0
    assert time.perf_counter() - start >= 11 / 15                    # played at 15 frames/s, not faster
    text = capsys.readouterr().out
    assert "received" in text and "dropped" in text and "p99" in text
    written = list(read_labels(out / "labels" / "clip.mkv"))
    assert 1 <= len(written) <= 12 and written[0].shape == (48, 64)
    assert fastseg_cli("predict", path, "--live", path, "--out", out) == 2   # one or the other


def test_bench_stream_options(tmp_path, capsys, monkeypatch):
    assert main(["bench", "--stream", "--only", "crf", "--out", str(tmp_path)]) == 2
    monkeypatch.setattr(demo, "find_camvid", lambda root: None)
    assert main(["bench", "--stream", "--out", str(tmp_path)]) == 2
    assert "--camvid" in capsys.readouterr().err
    seen = {}

    def fake(quick, camvid, frames=None):
        seen.update(camvid=camvid, frames=frames)
        values = {"mode": "live", "frames": 9, "dropped": 4, "throughput_fps": 5.0, "bound_ms": 40.0,
                  "latency_ms": dict.fromkeys(("p50", "p95", "p99", "max"), 10.0),
                  "age_ms": dict.fromkeys(("p50", "p95", "p99", "max"), 20.0)}
        late = dict(values, bound_ms=15.0, within_bound=False)  # a timing: shown, never a failure
        return [Figure("stream latency", "480x360", "live: ...", True, values),
                Figure("stream latency", "2048x1024", "live: ...", True, late)]

    monkeypatch.setitem(bench.CASES, "stream", bench.Case("stream", fake))
    (tmp_path / "val").mkdir()
    assert main(["bench", "--stream", "--camvid", str(tmp_path), "--frames", "9", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert seen == {"camvid": tmp_path, "frames": 9}
    out = capsys.readouterr().out
    assert "| 480x360 | live | 10 / 10 / 10 / 10 | 20 / 20 / 20 / 20 | 5.0 | 4 of 9 | p99 age <= 40 ms: yes |" in out
    assert ("| 2048x1024 | live | 10 / 10 / 10 / 10 | 20 / 20 / 20 / 20 | 5.0 | 4 of 9 | p99 age <= 15 ms: **NO** |"
            in out)


def test_conversion_time_joins_the_timings_without_reading_them_early():
    from fastseg.segmenter.stream import WithConversion

    class Pending(dict):  # stands for CUDA timings read only when asked for
        reads = 0

        def __getitem__(self, key):
            Pending.reads += 1
            return super().__getitem__(key)

    timings = WithConversion(Pending(model=0.02, total=0.03), 0.005)
    assert Pending.reads == 0
    assert timings["total"] == pytest.approx(0.035) and timings["convert"] == 0.005
    assert dict(timings) == pytest.approx({"convert": 0.005, "model": 0.02, "total": 0.035})
