"""`fastseg predict` on a video file (mp4, mkv, avi, mov, webm, m4v, animated GIF) or a live source.

For a video with output key K it writes
    OUT/labels/K.mkv    the class ids of every frame: a lossless FFV1 video, 8-bit grey (16-bit for
                        more than 256 classes), read back with fastseg.video.read_labels
    OUT/color/K.mp4     the class colours, H.264, at the source's size and frame rate
    OUT/overlay/K.mp4   the colours blended over the frames (--alpha)
Each file is written atomically (complete or absent). A video whose decoding fails part-way keeps
the outputs of the frames decoded before the error, and is reported as failed.
"""
from __future__ import annotations

import contextlib
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..video.reader import VideoDecodeError, is_animated_gif, is_video_name
from ..video.writer import LABELS_SUFFIX, PICTURE_SUFFIX

_SUFFIX = {"labels": LABELS_SUFFIX, "color": PICTURE_SUFFIX, "overlay": PICTURE_SUFFIX}


def is_video(path: Path) -> bool:
    """A video file by its name; a GIF only when it is animated."""
    if not is_video_name(path):
        return False
    if path.suffix.lower() != ".gif":
        return True
    try:
        return is_animated_gif(path)
    except Exception:  # unreadable: left to the image reader, which reports it
        return False


def output_paths(out: Path, key: str, kinds) -> dict[str, Path]:
    return {kind: out / kind / f"{key}{_SUFFIX[kind]}" for kind in kinds}


class VideoOutputs:
    """The output videos of one source, open for writing (atomically: committed when the block ends
    without an error). fps None: each frame is written at its own time (a live source)."""

    def __init__(self, paths: dict[str, Path], width: int, height: int, fps: Fraction | None,
                 palette: np.ndarray, alpha: float):
        self._paths, self._size, self._fps = paths, (width, height), fps
        self._palette, self._alpha = palette, alpha
        self._wide = len(palette) > 256
        self._stack = contextlib.ExitStack()
        self.frames = 0

    def __enter__(self) -> VideoOutputs:
        from ..video import labels_writer, picture_writer

        with self._stack as stack:
            self._writers = {kind: stack.enter_context(
                labels_writer(path, *self._size, self._fps, self._wide) if kind == "labels"
                else picture_writer(path, *self._size, self._fps)) for kind, path in self._paths.items()}
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)

    def write(self, frame: np.ndarray, labels: np.ndarray, seconds: float | None = None) -> None:
        from ..viz import colorize, overlay

        for kind, writer in self._writers.items():
            if kind == "labels":
                picture = labels.astype(np.uint16) if self._wide else labels
            elif kind == "color":
                picture = colorize(labels, self._palette)
            else:
                picture = overlay(frame, labels, self._palette, self._alpha)
            writer.write(picture, seconds)
        self.frames += 1


def segment_video(path: Path, paths: dict[str, Path], seg, palette: np.ndarray, alpha: float) -> str | None:
    """Segment every frame of a video and write its outputs; the reason it failed, or None."""
    from ..video import VideoReader

    try:
        reader = VideoReader(path)
    except (ImportError, VideoDecodeError) as exc:
        return str(exc)
    info = reader.info
    error = None
    with reader, VideoOutputs(paths, info.width, info.height, info.fps, palette, alpha) as outputs, \
            tqdm(total=info.frames, unit="frame", desc=path.name, leave=False, position=1, file=sys.stderr) as bar:
        try:
            for result in seg.stream(reader):
                outputs.write(result.frame, result.labels)
                bar.update()
        except VideoDecodeError as exc:
            if outputs.frames == 0:
                raise RuntimeError(str(exc)) from exc  # nothing to keep: no output at all
            error = f"{exc}; the outputs hold the {outputs.frames} frames before it"
    return error
