"""Atomic file writes: a reader (or a re-run after a crash) sees the old file or the new one, never half.

    with atomic_write("out/labels/x.png") as f:
        image.save(f, format="PNG")

The data goes to a temporary file in the destination's folder (same file system, so the final
os.replace is atomic), is flushed to disk, and replaces the destination only when the block ends
without an error; on any error, KeyboardInterrupt included, the temporary file is removed.

A process killed outright (SIGKILL, power loss) cannot remove its temporary file. Temporary names
carry the writer's process id (``.NAME.<pid>-<hex>.tmp``), so a later run removes the ones whose
writer is gone (`remove_stale_temporaries`) and leaves those of a writer still running alone.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".tmp"
# .NAME.<pid>-<8 hex>.tmp[.suffix]; the form without a pid is what earlier versions wrote
_TEMPORARY = re.compile(r"^\..+\.(?:(\d+)-)?[0-9a-f]{8}\.tmp(?:\.\w+)?$")
_PIDLESS_AGE = 3600.0  # seconds: a temporary without a pid is stale once this old


def _temporary_name(path: Path, suffix: str = "") -> Path:
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}{suffix}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Remove the temporary files that atomic writes left under folder (recursively) when their
    process was killed: those whose writer process no longer runs on this machine (and pid-less ones
    of earlier versions older than an hour). Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.rglob(".*.tmp*"):
        match = _TEMPORARY.match(path.name)
        if match is None or not path.is_file():
            continue
        pid = match.group(1)
        with contextlib.suppress(FileNotFoundError):
            stale = (not _alive(int(pid))) if pid else time.time() - path.stat().st_mtime > _PIDLESS_AGE
            if stale:
                path.unlink()
                removed += 1
    return removed


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
        tmp = _temporary_name(path)
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
    tmp = _temporary_name(path, path.suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text.encode())
