"""`Segmenter.stream`'s loop: frames with their capture timestamps in, results with their latency out.

Each result carries `timestamp` (the frame's capture time, see `fastseg.video.sources`) and `latency`
(the frame's age when its labels come out: `clock() - timestamp`; for a video file read offline,
whose timestamps are its presentation times, the age since the frame was decoded).

- Offline (`live=False`): every frame is segmented, in order. A decoder source (a `VideoReader`, or
  the name of a file) is decoded in the loop, or with `prefetch=True` on a thread of its own, a
  frame ahead, so that decoding frame N+1 (FFmpeg, without the GIL) overlaps the network on frame
  N. That pays only where the network leaves cores idle: on a 2-core machine whose cores ONNX
  Runtime fills, the decoder's thread slowed the loop (`fastseg bench --stream` measures it), so it
  is not the default. Preprocessing is not overlapped: it is one native pass, well under a hundredth
  of the network's time.
- Live (`live=True`): the source is read on a thread of its own as fast as it delivers, and only the
  newest frame is kept: when the network is slower than the source, the frames that arrived while
  it ran are dropped (counted in `dropped`) and the next result is always of the freshest frame, so
  latency stays within one network time plus one source interval instead of growing. A file
  named as a live source is played at its own frame rate. A source decoded in this process (a file,
  camera or URL) decodes on the cores the network uses: where the network runs in ONNX Runtime
  (LR-ASPP, SegFormer; `seg.runtime.name`), build the Segmenter with `ort_spinning=False` (as
  `fastseg predict --live` does), or ONNX Runtime's workers, spinning
  between operators, take the decoder's time and frames reach the loop late (`fastseg bench
  --stream`, 2 cores: with spinning workers the live frame age's p99 exceeded that bound in 2 of 4
  runs, without them in none).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..video.sources import Unconverted

Clock = Callable[[], float]


class WithConversion(Mapping):
    """A result's timings plus the frame's conversion to RGB ("convert", counted in "total"). A view:
    on CUDA the stages' times are read only when asked for, so that nothing waits for the device."""

    def __init__(self, timings: Mapping, convert: float):
        self._timings, self._convert = timings, convert

    def __getitem__(self, stage: str) -> float:
        if stage == "convert":
            return self._convert
        return self._timings[stage] + (self._convert if stage == "total" else 0.0)

    def __iter__(self) -> Iterator[str]:
        yield "convert"
        yield from self._timings

    def __len__(self) -> int:
        return len(self._timings) + 1

    def __repr__(self) -> str:
        return repr(dict(self))


class FrameStream:
    """The iterator `Segmenter.stream` returns. `received`: frames taken from the source; `dropped`:
    live frames skipped because a newer one arrived first; `processed`: results handed out.
    Use it in a `with` block (or call `close()`) to stop a live source's reader early."""

    def __init__(self, run: Callable[[Any], Any], source: Iterable, *, live: bool = False,
                 clock: Clock = time.perf_counter, prefetch: bool = False):
        self._run, self._source, self.live, self.clock = run, source, bool(live), clock
        self.prefetch = bool(prefetch)
        self._worker: Any = None
        self._opened: Any = None  # a reader this stream opened from a name, closed with it
        self._frames: Iterator | None = None
        self.processed = 0
        self._taken = 0

    @property
    def dropped(self) -> int:
        return getattr(self._worker, "dropped", 0)

    @property
    def received(self) -> int:
        return getattr(self._worker, "received", self._taken)

    def _start(self) -> Iterator:
        """(timestamp, frame, born) per frame: a frame's age counts from `born` (on the clock)."""
        from ..video import sources

        source, clock = self._source, self.clock
        named = isinstance(source, (str, int, os.PathLike))
        if self.live:
            if sources.is_file_source(source):
                reader = self._opened = sources.open_source(source, live=True)
                self._worker = sources.Latest(
                    lambda latest: sources.aged(sources.paced(reader, clock, skipped=latest.skip)))
                return iter(self._worker)
            if named:
                self._opened = sources.open_source(source, live=True)
                frames = sources.anchored(self._opened, clock)
            else:
                frames = sources.timestamped(source, clock)
            self._worker = sources.Latest(sources.aged(frames))
            return iter(self._worker)
        if named or isinstance(source, sources.VideoReader):
            if isinstance(source, sources.VideoReader):
                reader = source
            else:
                reader = self._opened = sources.open_source(source)
            if not self.prefetch:
                return sources.decoded(reader, clock)
            self._worker = sources.Prefetch(sources.decoded(reader, clock))
            return iter(self._worker)
        return sources.aged(sources.timestamped(source, clock))

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self):
        if self._frames is None:
            self._frames = self._start()
        try:
            timestamp, frame, born = next(self._frames)
        except BaseException:
            self.close()
            raise
        self._taken += 1
        convert = 0.0
        if isinstance(frame, Unconverted):  # a file played live: RGB only for the frames taken
            t0 = time.perf_counter()
            frame = frame.rgb()
            convert = time.perf_counter() - t0
        result = self._run(frame)
        if convert:  # the frame's conversion is part of its processing time
            result.timings = WithConversion(result.timings, convert)
        result.frame, result.timestamp = frame, timestamp
        result.latency = self.clock() - born
        self.processed += 1
        return result

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            if self._opened is not None and not self._worker.running:  # a device is let go now
                self._opened.close()
                self._opened = None

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()
