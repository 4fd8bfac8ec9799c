"""Video in and out through PyAV (FFmpeg), an optional dependency: pip install 'fastseg-engine[video]'.

    from fastseg.video import VideoReader, read_labels
    with VideoReader("drive.mp4") as video:          # RGB frames and their presentation times
        for seconds, rgb in video: ...
    for result in seg.stream("drive.mp4"): ...       # every frame (prefetch=True: decoded ahead)
    for result in seg.stream(0, live=True): ...      # a camera: always the newest frame

`reader` (decoding, damaged-file detection), `writer` (overlay videos and lossless label videos,
written atomically), `sources` (timestamps, playback at a file's own rate, the prefetching and the
newest-frame-only readers that `Segmenter.stream` runs on a thread of their own). Importing this
package does not import PyAV; opening a video does.
"""
from .reader import VIDEO_SUFFIXES, VideoDecodeError, VideoInfo, VideoReader, is_video_name
from .writer import labels_writer, picture_writer, read_labels

__all__ = ["VideoReader", "VideoInfo", "VideoDecodeError", "VIDEO_SUFFIXES", "is_video_name",
           "picture_writer", "labels_writer", "read_labels"]
