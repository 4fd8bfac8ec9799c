"""Per-frame latency of `Segmenter.stream` on a real video (the `stream` bench case:
`fastseg bench --stream`, or `--only stream --camvid DIR`).

The video is made here from CamVid's frames (val, then train: 468 frames of driving in Cambridge,
cycled to the length asked for), resized to the size measured and encoded as H.264 in a temporary
folder. For each model and size, two runs over the same video:

- offline: `seg.stream(path)`: every frame decoded (on the stream's own thread) and segmented;
  throughput, and per frame the model's time (preprocess to labels) and the frame's age when its
  labels come out (counted from when it was decoded);
- live: `seg.stream(path, live=True)`: the file played at its own frame rate (30 frames/s) as a
  camera would deliver it; the newest frame is always the next one, the others are dropped; the
  Segmenter is built with `ort_spinning=False`, as for any source decoded in the process (it
  matters where the network runs in ONNX Runtime: LR-ASPP; the default model runs in torch). Its
  bound: p99 frame age <= p99 model time + one source interval (a frame waits at most one interval
  for the model, then takes the model's time), i.e. latency does not grow with the video's length.
  The bound assumes each frame is in hand at its due time; a file played live is decoded on the
  cores the model uses, so on a busy machine frames arrive late and the bound can fail without the
  engine at fault. It is a timing, so it is reported (`within_bound`), not asserted: the figure
  fails only under FASTSEG_BENCH_STRICT=1, like the speed targets.

A ratio row says whether decoding on a thread of its own pays: the default model over a 60-frame
480x360 video by `seg.stream(path)` (decoding in the loop, the default) against
`seg.stream(path, prefetch=True)`, interleaved, same labels.

Latencies are absolute times of this machine (a real-time loop's budget is in milliseconds); the
results file records the machine and its load with them.
"""
from __future__ import annotations

import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from .measure import Agreement, Figure, Reference, Row, measure

SOURCE_FPS = 30
SIZES = ((360, 480), (1024, 2048))  # CamVid's own size; a Cityscapes-sized frame


def camvid_video(root: Path, path: Path, frames: int, size: tuple[int, int], fps: int = SOURCE_FPS) -> Path:
    """An H.264 video of `frames` CamVid frames (val then train, cycled) at `size` (h, w)."""
    from PIL import Image

    from ..video import picture_writer

    files = sorted((Path(root) / "val").glob("*.png")) + sorted((Path(root) / "train").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"{root}: no CamVid frames in val/ or train/")
    h, w = size
    with picture_writer(path, w, h, Fraction(fps)) as video:
        for i in range(frames):
            with Image.open(files[i % len(files)]) as im:
                video.write(np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR)))
    return path


def percentiles(values) -> dict:
    ms = 1e3 * np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2),
            "max": round(float(ms.max()), 2)}


def run_stream(seg, path: Path, live: bool, frames: int) -> dict:
    """Latency figures of one pass over the video. Live, the pass stops while the source still has
    twice the slowest frame time to play: a frame taken after the source ended has no newer frame
    to replace it and would count the wait for a frame that never comes."""
    model_times, ages = [], []
    start = time.perf_counter()
    with seg.stream(str(path), live=live) as stream:
        for result in stream:
            model_times.append(result.timings["total"])
            ages.append(result.latency)
            left = frames - stream.received
            if live and left < SOURCE_FPS * 2 * max(model_times):
                break
        received, dropped = stream.received, stream.dropped
    seconds = time.perf_counter() - start
    return {"frames": received, "segmented": len(ages), "dropped": dropped,
            "throughput_fps": round(len(ages) / seconds, 2),
            "latency_ms": percentiles(model_times), "age_ms": percentiles(ages)}


def _text(mode: str, r: dict) -> str:
    lat, age = r["latency_ms"], r["age_ms"]
    dropped = f", {r['dropped']} of {r['frames']} dropped" if mode == "live" else ""
    return (f"{mode}: latency p50 {lat['p50']:.0f} / p95 {lat['p95']:.0f} / p99 {lat['p99']:.0f} / "
            f"max {lat['max']:.0f} ms; frame age p50 {age['p50']:.0f} / p95 {age['p95']:.0f} / "
            f"p99 {age['p99']:.0f} / max {age['max']:.0f} ms; {r['throughput_fps']:.1f} frames/s over "
            f"{r['segmented']} frames{dropped}")


def models() -> dict:
    from ..models import create, pretrained

    return {"default model (CamVid U-Net)": lambda: pretrained.get().path,
            "LR-ASPP MobileNetV3-Large": lambda: create("lraspp_mobilenet_v3_large", num_classes=21).eval()}


def prefetch_row(seg, video: Path, shape: str, rounds: int) -> Row:
    """Decoding in the loop (the default) against decoding a frame ahead on a thread of its own."""

    def inline():
        return [r.labels.copy() for r in seg.stream(str(video))]

    def ahead():
        return [r.labels.copy() for r in seg.stream(str(video), prefetch=True)]

    same = all(np.array_equal(a, b) for a, b in zip(inline(), ahead(), strict=True))
    return measure("stream of a video file", shape, {"decoding in the loop (default)": inline},
                   {"decoding on a thread of its own (prefetch=True)": Reference(ahead, Agreement.exact(same))},
                   rounds)[0]


def stream(quick: bool, camvid: Path, frames: int | None = None) -> list[Row | Figure]:
    """Offline and live latency of each model at each size; quick (CI): 30 frames instead of 500, at
    480x360 only."""
    from .. import Segmenter

    frames = frames or (30 if quick else 500)
    figures: list[Row | Figure] = []
    with tempfile.TemporaryDirectory(prefix="fastseg-stream-") as tmp:
        short_frames = 30 if quick else 60
        short = camvid_video(camvid, Path(tmp) / "camvid_short.mp4", short_frames, SIZES[0])
        seg = Segmenter(models()["default model (CamVid U-Net)"]())
        seg.warmup([SIZES[0]])
        figures.append(prefetch_row(seg, short, f"480x360 H.264, {short_frames} CamVid frames, default model",
                                    2 if quick else 5))
        for h, w in SIZES[:1] if quick else SIZES:
            video = camvid_video(camvid, Path(tmp) / f"camvid_{w}x{h}.mp4", frames, (h, w))
            for name, make in models().items():
                seg = Segmenter(make())
                seg.warmup([(h, w)])
                shape = f"{w}x{h} H.264, {frames} CamVid frames at {SOURCE_FPS} frames/s, {name}"
                offline = run_stream(seg, video, False, frames)
                print(f"{shape}: {_text('offline', offline)}", file=sys.stderr, flush=True)
                figures.append(Figure("stream latency", shape, _text("offline", offline), True,
                                      {"mode": "offline", "runtime": seg.runtime.name, **offline}))
                # live, the decoder shares the cores: where the network runs in ONNX Runtime, its workers
                # sleep between operators instead of spinning (what `fastseg predict --live` does;
                # fastseg.segmenter.stream)
                live_seg = Segmenter(make(), ort_spinning=False)
                live_seg.warmup([(h, w)])
                live = run_stream(live_seg, video, True, frames)
                print(f"{shape}: {_text('live', live)}", file=sys.stderr, flush=True)
                bound = live["latency_ms"]["p99"] + 1e3 / SOURCE_FPS
                within = bool(live["age_ms"]["p99"] <= bound)
                figures.append(Figure("stream latency", shape,
                                      _text("live", live) + f"; p99 age within {bound:.0f} ms (p99 latency + "
                                      f"one source interval): {'yes' if within else 'NO'}", True,
                                      {"mode": "live", "runtime": live_seg.runtime.name, "ort_spinning": False,
                                       "bound_ms": round(bound, 2), "within_bound": within, **live}))
    return figures
