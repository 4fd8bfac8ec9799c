"""Videos written through PyAV, atomically: a temporary file beside the destination, renamed over it
only when every frame is written (`fastseg._atomic.atomic_path`), so a video that exists is complete.

Two kinds:
- pictures (overlays, colour masks): H.264 in MP4 (4:2:0 when the size is even, 4:4:4 when it is
  odd, which 4:2:0 cannot hold), at the source's size and frame rate;
- labels: the class ids of every frame as a lossless FFV1 video in Matroska, 8-bit grey (16-bit for
  models of more than 256 classes): one file per video that keeps each frame's ids exactly, is a
  fraction of the size of a folder of PNGs, and plays in any FFmpeg-based player (dark: the grey
  level is the id). `read_labels` reads it back.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from .._atomic import atomic_path
from .reader import require_av

PICTURE_SUFFIX = ".mp4"
LABELS_SUFFIX = ".mkv"
_PICTURE_CODECS = ("libx264", "h264", "mpeg4")  # the first one this FFmpeg build can encode


class _Encoder:
    def __init__(self, container, stream, pixel_format: str):
        self._container, self._stream, self._format = container, stream, pixel_format
        self._time_base = stream.codec_context.time_base
        self.frames = 0
        self._pts = -1

    def write(self, array: np.ndarray, seconds: float | None = None) -> None:
        """Append a frame: the next one at the frame rate, or shown at `seconds` from the start (for
        a live source's irregular frames; times must increase)."""
        av = require_av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=self._format)
        pts = self.frames if seconds is None else round(seconds / self._time_base)
        self._pts = frame.pts = max(pts, self._pts + 1)
        self.frames += 1
        self._container.mux(self._stream.encode(frame))

    def flush(self) -> None:
        self._container.mux(self._stream.encode(None))


@contextlib.contextmanager
def _open(path: str | os.PathLike, codec: str, width: int, height: int, fps: Fraction | None, pixel_format: str,
          input_format: str, options: dict | None = None) -> Iterator[_Encoder]:
    av = require_av()
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), "w")
        try:
            stream = container.add_stream(codec, rate=Fraction(fps or 1000), options=options or {})
            stream.width, stream.height, stream.pix_fmt = int(width), int(height), pixel_format
            # frame k at k / fps; a millisecond clock for frames written with their own times
            stream.codec_context.time_base = 1 / Fraction(fps) if fps else Fraction(1, 1000)
            encoder = _Encoder(container, stream, input_format)
            yield encoder
            encoder.flush()
        finally:
            container.close()


def picture_writer(path: str | os.PathLike, width: int, height: int, fps: Fraction | None):
    """A context manager whose `write(rgb, seconds=None)` appends a uint8 [H,W,3] frame to an MP4
    video. fps None: frames are written with their own times (`seconds`), a variable frame rate."""
    av = require_av()
    codec = next((c for c in _PICTURE_CODECS if c in av.codecs_available), None)
    if codec is None:
        raise RuntimeError("this PyAV build has no H.264 or MPEG-4 encoder")
    chroma = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    options = {"crf": "18", "preset": "veryfast"} if codec == "libx264" else {}
    return _open(path, codec, width, height, fps, chroma, "rgb24", options)


def labels_writer(path: str | os.PathLike, width: int, height: int, fps: Fraction | None, wide: bool = False):
    """A context manager whose `write(labels, seconds=None)` appends a frame of class ids (uint8
    [H,W]; uint16 when `wide`) to a lossless FFV1 video (fps as in `picture_writer`)."""
    grey = "gray16le" if wide else "gray"
    return _open(path, "ffv1", width, height, fps, grey, grey)


def read_labels(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """The class ids of each frame of a labels video, uint8 [H,W] (uint16 for a 16-bit one)."""
    av = require_av()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray()
