"""Inputs and outputs of `fastseg predict --ray` that are URLs of a file system pyarrow reads
(s3://, gs://, abfs://, hdfs://, file://): listed, checked and written through pyarrow.fs.

Local paths keep the single-process code (fastseg/commands/predict.py: `_inputs.find_inputs`,
atomic writes through a temporary file and os.replace). An object store has no rename, but an
object appears only when its upload completes: each output is encoded in memory and written once,
whole, so an output that exists is complete there too.
"""
from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import cast

import numpy as np


def is_url(text) -> bool:
    return "://" in str(text)


def filesystem(url: str):
    """(pyarrow FileSystem, the path inside it) for a URL."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(url)


def _url(url: str, path: str) -> str:
    """The URL of `path` on the file system of `url` (same scheme)."""
    scheme = url.split("://", 1)[0]
    return f"{scheme}://{path.lstrip('/')}" if scheme != "file" else f"file://{path}"


def list_images(urls: list[str], recursive: bool):
    """The image files under URLs of folders or files, as fastseg.commands._inputs.Inputs whose
    sources' paths are URLs; keys relative to the common folder as for local inputs."""
    import os

    from pyarrow import fs

    from ..commands._inputs import Inputs, Source, _keys, is_image_name

    found, anchors = Inputs(), []
    files: dict[str, str] = {}  # path in the file system -> the URL it was found under
    for url in urls:
        system, base = filesystem(url)
        info = system.get_file_info(base)
        if info.type == fs.FileType.Directory:
            anchors.append(PurePosixPath(base))
            for entry in system.get_file_info(fs.FileSelector(base, recursive=recursive)):
                path = PurePosixPath(entry.path)
                if entry.type != fs.FileType.File or path.name.startswith("."):
                    continue
                if is_image_name(Path(path)):
                    files.setdefault(entry.path, url)
                else:
                    found.ignored += 1
        elif info.type == fs.FileType.File:
            anchors.append(PurePosixPath(base).parent)
            files.setdefault(base, url)
        else:
            found.missing.append(url)
    if files:
        folders = [str(a) for a in anchors] + [str(PurePosixPath(p).parent) for p in files]
        root = PurePosixPath(os.path.commonpath(folders))
        sources = _keys([Path(p) for p in files], Path(root))  # pure path arithmetic: nothing is read
        # the sources' paths become URLs (strings: a Path would fold their '//')
        found.sources = [Source(cast(Path, _url(files[str(s.path)], str(s.path))), s.key) for s in sources]
    return found


def outputs_done(out: str, keys: list[str], kinds) -> list[bool]:
    """Whether every output of each key exists under the output URL `out` (one listing call)."""
    from pyarrow import fs

    system, base = filesystem(out)
    paths = [[f"{base}/{kind}/{key}.png" for kind in kinds] for key in keys]
    infos = system.get_file_info([p for group in paths for p in group])
    exists = [i.type == fs.FileType.File for i in infos]
    per = len(kinds)
    return [all(exists[i * per:(i + 1) * per]) for i in range(len(keys))]


def read_bytes(url: str) -> bytes:
    system, path = filesystem(url)
    with system.open_input_file(path) as f:
        return f.read()


def write_whole(url: str, data: bytes) -> None:
    """The object or file at `url` holding `data`, written in one stream that creates it on close."""
    system, path = filesystem(url)
    system.create_dir(str(PurePosixPath(path).parent), recursive=True)
    with system.open_output_stream(path) as f:
        f.write(data)


def segment_to_urls(source, seg, palette: np.ndarray, args) -> str | None:
    """One image read from a URL or a local path, segmented, its outputs written under the output URL
    args.out; the reason it failed, or None."""
    from ..commands.predict import picture, read_image

    buffer = None
    try:
        data = read_bytes(str(source.path)) if is_url(source.path) else Path(source.path).read_bytes()
        buffer = io.BytesIO(data)
        image = read_image(buffer)  # type: ignore[arg-type]
    except Exception as exc:  # as the single-process reader words it, naming the file, not the buffer
        return f"cannot read the image: {exc}".replace(repr(buffer), repr(str(source.path)))
    try:
        labels = seg.predict(image).labels
        for kind in args.save:
            buffer = io.BytesIO()
            picture(kind, image, labels, palette, args.alpha).save(buffer, format="PNG")
            write_whole(f"{str(args.out).rstrip('/')}/{kind}/{source.key}.png", buffer.getvalue())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
