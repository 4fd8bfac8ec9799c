"""Video files and streams read through PyAV (FFmpeg's libraries): RGB frames with their timestamps.

    with VideoReader("drive.mp4") as video:
        video.info.fps, video.info.width, video.info.height
        for seconds, rgb in video:   # the frame's presentation time; uint8 [H,W,3]
            ...

Frames come out as RGB straight from FFmpeg's converter (`rgb24`), whatever the codec's pixel
format, so no BGR / YUV frame ever reaches the Segmenter by mistake.

A damaged file is reported, never silently shortened: a decoding error raises `VideoDecodeError`
after the frames decoded before it have been handed out, and a file that ends before the length
its header states (a truncated Matroska / WebM / AVI file decodes to its end without an error) does
the same once the last frame has been handed out.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

# what `fastseg predict` treats as a video (a GIF only when it has more than one frame)
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".gif", ".m4v"})
DEFAULT_FPS = Fraction(25)  # for a stream that states no frame rate
_LATE = 1.5  # frame intervals by which the last frame may end before the stated length


class VideoDecodeError(RuntimeError):
    """The video could not be read to its end: `frames` frames were read before the problem."""

    def __init__(self, source: str, frames: int, reason: str):
        super().__init__(f"{source}: {reason} (after {frames} frame{'' if frames == 1 else 's'})")
        self.source, self.frames, self.reason = source, frames, reason


def require_av() -> Any:
    """The `av` module, or an ImportError saying how to install it."""
    try:
        import av
    except ImportError as exc:
        raise ImportError("video needs PyAV: pip install 'fastseg-engine[video]' (or: pip install av)") from exc
    return av


def is_video_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_animated_gif(path: str | os.PathLike) -> bool:
    """True for a GIF of more than one frame (a single-frame GIF is an image)."""
    from PIL import Image

    with Image.open(path) as im:
        return bool(getattr(im, "is_animated", False))


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction               # frames per second (the stream's average rate)
    frames: int | None          # the frame count the container states, when it states one
    duration: float | None      # seconds, when the container states it


class VideoReader:
    """One video stream of a file, device or URL, decoded to RGB frames.

    source: a path, a URL (rtsp://, http://, ...) or a device (/dev/video0).
    format: FFmpeg's input format when it cannot be guessed from the name ("v4l2" for a camera).
    options: FFmpeg's input options (e.g. {"rtsp_transport": "tcp"}).
    live: decode for the lowest delay (slice threads only: frame threads hold a few frames back).
    """

    def __init__(self, source: str | os.PathLike, format: str | None = None, options: dict | None = None,
                 live: bool = False):
        av = require_av()
        self.source = str(source)
        try:
            self._container = av.open(self.source, format=format, options=options or {})
        except (av.FFmpegError, OSError) as exc:
            raise VideoDecodeError(self.source, 0, f"cannot open: {exc}") from exc
        if not self._container.streams.video:
            self._container.close()
            raise VideoDecodeError(self.source, 0, "no video stream")
        self._stream = self._container.streams.video[0]
        # FFmpeg decodes on threads of its own; frame threads give the most throughput but hold frames back
        self._stream.thread_type = "SLICE" if live else "AUTO"
        ctx = self._stream.codec_context
        fps = self._stream.average_rate or self._stream.guessed_rate or DEFAULT_FPS
        duration = self._container.duration
        self.info = VideoInfo(int(ctx.width), int(ctx.height), Fraction(fps),
                              int(self._stream.frames) or None,
                              None if duration is None else duration / av.time_base)
        self.frames_read = 0
        self._skipping = False   # non-reference frames left undecoded (a live reader behind real time)
        self._skipped = False    # ... at some point: the frame count stated no longer applies

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        """(presentation time in seconds, uint8 RGB [H,W,3]) per frame, in display order."""
        for seconds, frame in self.decoded():
            yield seconds, frame.to_ndarray(format="rgb24")

    def decoded(self) -> Iterator[tuple[float, Any]]:
        """(presentation time, PyAV frame) per frame: `frame.to_ndarray(format="rgb24")` converts it,
        which a live reader skips for frames that are stale before they are converted."""
        av = require_av()
        interval = 1.0 / float(self.info.fps)
        last = None
        try:
            for frame in self._container.decode(self._stream):
                seconds = frame.time if frame.time is not None else self.frames_read * interval
                self.frames_read += 1
                last = seconds
                yield seconds, frame
        except av.FFmpegError as exc:
            raise VideoDecodeError(self.source, self.frames_read, f"decoding failed: {exc}") from exc
        self._check_complete(last, interval)

    def skip_nonreference(self, skip: bool) -> None:
        """Leave the frames no other frame depends on (B-frames) undecoded, or decode all again: the
        least decoding a live reader that has fallen behind real time can do to catch up."""
        if skip != self._skipping:
            self._stream.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
            self._skipping = skip
            self._skipped = self._skipped or skip

    def _check_complete(self, last: float | None, interval: float) -> None:
        stated = self.info.frames
        if stated is not None and self.frames_read < stated and not self._skipped:
            raise VideoDecodeError(self.source, self.frames_read, f"truncated: the file states {stated} frames")
        start = self._stream.start_time
        start = 0.0 if start is None else float(start * self._stream.time_base)
        if self.info.duration is not None and last is not None:
            end = last - start + interval
            if end < self.info.duration - _LATE * interval:
                raise VideoDecodeError(self.source, self.frames_read,
                                       f"truncated: ends at {end:.2f} s of the {self.info.duration:.2f} s it states")
        if self.frames_read == 0:
            raise VideoDecodeError(self.source, 0, "no frame could be decoded")

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
