"""Frame sources for `Segmenter.stream`: every frame paired with its capture timestamp.

A source is any iterable of frames or of (timestamp, frame) pairs, a `VideoReader`, or the name of
a file, device or URL (opened with `open_source`). Timestamps are seconds on one clock, by default
`time.perf_counter`, so that a frame's age is `clock() - timestamp`:

- a caller's (timestamp, frame) keeps the caller's timestamp (which must be on the same clock);
- a bare frame is stamped when it is taken from the iterable;
- a live decoder's frames carry its presentation times, anchored to the clock at the first frame
  (taken as captured when it arrives); a file played live (`paced`) is released at its own frame
  rate, each frame at its presentation time;
- a video file read offline keeps its presentation times (seconds from its start): its frames'
  age is counted from when they were decoded (`aged`).

`Prefetch` decodes ahead on a thread of its own (a bounded queue: every frame is kept), `Latest`
keeps only the newest frame (older ones not yet taken are dropped and counted), so a consumer slower
than the source always gets the freshest frame and its latency does not grow.
"""
from __future__ import annotations

import numbers
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .reader import VideoReader

Clock = Callable[[], float]


def open_source(source: str | os.PathLike | int, live: bool = False) -> VideoReader:
    """A camera (an index like 0 or "0", or /dev/videoN, read through V4L2), a URL (rtsp://, http://,
    ...; RTSP over TCP) or a file; `live`: decoded for the lowest delay."""
    text = str(source)
    if text.isdigit():
        text = f"/dev/video{text}"
    if text.startswith("/dev/video"):
        return VideoReader(text, format="v4l2", live=live)
    if text.startswith("rtsp://"):
        return VideoReader(text, options={"rtsp_transport": "tcp"}, live=live)
    return VideoReader(text, live=live)


def is_file_source(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(source).is_file()


def timestamped(source: Iterable, clock: Clock = time.perf_counter) -> Iterator[tuple[float, Any]]:
    """(timestamp, frame) for every item of `source` (see the module's docstring)."""
    for item in source:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], numbers.Real):
            yield float(item[0]), item[1]
        else:
            yield clock(), item


def aged(items: Iterable[tuple[float, Any]]) -> Iterator[tuple[float, Any, float]]:
    """(timestamp, frame, born) for timestamps on the clock: a frame's age counts from its timestamp."""
    for timestamp, frame in items:
        yield timestamp, frame, timestamp


def decoded(reader: Iterable[tuple[float, Any]],
            clock: Clock = time.perf_counter) -> Iterator[tuple[float, Any, float]]:
    """A file read offline: (presentation time, frame, the clock's time when it was decoded)."""
    for seconds, frame in reader:
        yield seconds, frame, clock()


def anchored(reader: Iterable[tuple[float, Any]], clock: Clock = time.perf_counter) -> Iterator[tuple[float, Any]]:
    """A decoder's presentation times moved onto `clock`: the first frame is taken as captured when
    it arrives, the others at their presentation time after it (never later than their arrival)."""
    offset = None
    for seconds, frame in reader:
        now = clock()
        if offset is None:
            offset = now - seconds
        yield min(now, seconds + offset), frame


def paced(reader: VideoReader, clock: Clock = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
          skipped: Callable[[], None] | None = None) -> Iterator[tuple[float, Any]]:
    """A recorded video played as a live source: each frame is decoded, then released at its
    presentation time after the first one, stamped with that time, as an `Unconverted` frame (RGB on
    demand). When the decoder falls behind real time (a machine busy with the model), a frame
    decoded after the next one was due is skipped, as a camera's frame would have been overwritten
    (`skipped()` is called), and frames no other depends on are left undecoded until it has caught up."""
    start: float | None = None
    previous = 0.0
    interval = 1.0 / float(reader.info.fps)
    for seconds, frame in reader.decoded():
        if start is None:
            start = clock() - seconds
        elif skipped is not None:  # the frames the decoder left out count as skipped too
            for _ in range(round((seconds - previous) / interval) - 1):
                skipped()
        previous = seconds
        due = start + seconds
        wait = due - clock()
        late = -wait > interval
        reader.skip_nonreference(late)
        if wait > 0:
            sleep(wait)
        elif late:
            if skipped is not None:
                skipped()
            continue
        yield due, Unconverted(frame)


class Unconverted:
    """A decoded frame still in the decoder's pixel format, converted to RGB when the consumer takes
    it (`rgb()`): a live source's frames are mostly replaced before they are taken, and converting
    each one (a few ms at 2048x1024) would take the cores from the network for nothing."""

    __slots__ = ("frame",)

    def __init__(self, frame: Any):
        self.frame = frame

    def rgb(self) -> Any:
        return self.frame.to_ndarray(format="rgb24")


class _Worker:
    """Runs `items` on a daemon thread of its own; `close()` asks it to stop at the next item.
    `items` may be a function of the worker that returns them (for a source that reports to it)."""

    def __init__(self, items: Iterator | Callable[[Any], Iterator], name: str):
        self._items = items(self) if callable(items) else items
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set():
                    break
                self.put(item)
        except BaseException as exc:  # handed to the consumer, raised there after the frames before it
            self.error = exc
        finally:
            self.finish()

    def put(self, item) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def close(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


class Prefetch(_Worker):
    """Decodes up to `depth` frames ahead of the consumer; nothing is dropped. One is enough to
    overlap decoding with the model, and each more adds a model time to every frame's age."""

    _END = object()

    def __init__(self, items: Iterator, depth: int = 1):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        super().__init__(items, "fastseg-prefetch")

    def put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        if not self._stop.is_set():
            self.put(self._END)

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is self._END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self, timeout: float = 1.0) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        super().close(timeout)


class Latest(_Worker):
    """Keeps only the newest frame: a frame replaced before the consumer took it is dropped.
    `received` frames came from the source, `dropped` of them were never taken."""

    def __init__(self, items: Iterator):
        self._cond = threading.Condition()
        self._slot: Any = None
        self._full = False
        self._done = False
        self.received = 0
        self.dropped = 0
        super().__init__(items, "fastseg-live")

    def skip(self) -> None:
        """A frame the source dropped before handing it over (counted as received and dropped)."""
        with self._cond:
            self.received += 1
            self.dropped += 1

    def put(self, item) -> None:
        with self._cond:
            if self._full:
                self.dropped += 1
            self._slot, self._full = item, True
            self.received += 1
            self._cond.notify()

    def finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify()

    def __iter__(self) -> Iterator:
        while True:
            with self._cond:
                while not self._full and not self._done:
                    self._cond.wait()
                if not self._full:
                    if self.error is not None:
                        raise self.error
                    return
                item, self._slot, self._full = self._slot, None, False
            yield item
