"""Atomic file writes: a reader (or a re-run after a crash) sees the old file or the new one, never half.

    with atomic_write("out/labels/x.png") as f:
        image.save(f, format="PNG")

The data goes to a temporary file in the destination's folder (same file system, so the final
os.replace is atomic), is flushed to disk, and replaces the destination only when the block ends
without an error; on any error, KeyboardInterrupt included, the temporary file is removed.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file next to path, with the permissions a plain open() would give it (0666 less the
    umask; tempfile.mkstemp would make it 0600, and os.replace keeps that)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that take a file name (matplotlib's savefig): yields a temporary path beside
    `path`, with the same suffix so that the format is still detected from it; on success it
    replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text.encode())
