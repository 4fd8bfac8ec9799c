"""Which images `fastseg predict` reads, and the output name of each.

Inputs are files, folders (their images; all levels with recursive=True) and glob patterns
(`"frames/**/*.jpg"`, expanded here so that quoting it from the shell works). Each image keeps its
path relative to the common folder of all inputs, without the suffix, as its output key: `a/x.png`
and `b/x.png` become `a/x` and `b/x`, never one file. Two images that differ only in their suffix
(`x.png`, `x.jpg`) keep the suffix in the key (`x.png`, `x.jpg`).
"""
from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..video.reader import VIDEO_SUFFIXES

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                            ".pgm", ".pnm"})


@dataclass(frozen=True)
class Source:
    path: Path   # the image file
    key: str     # output name without suffix, relative ('/'-separated)


@dataclass
class Inputs:
    sources: list = field(default_factory=list)   # of Source, sorted by key
    missing: list = field(default_factory=list)   # input arguments that matched nothing
    ignored: int = 0                              # files in folders / globs that are not images


def is_image_name(path: Path) -> bool:
    """An image or a video file, by its name."""
    return path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() in VIDEO_SUFFIXES


def find_inputs(arguments: list[str], recursive: bool = False, exclude: Path | None = None) -> Inputs:
    """Expand the command line's inputs. Files under `exclude` (the output folder) and hidden files
    are left out of folders and globs; a file named explicitly is always taken (if it is not an
    image, reading it fails and is reported)."""
    exclude = exclude.resolve() if exclude is not None else None
    found = Inputs()
    files: dict[Path, None] = {}   # resolved path -> None, in discovery order, without repeats
    anchors: list[Path] = []

    def take(candidates, explicit: bool):
        for p in candidates:
            p = p.resolve()
            if not explicit and (_hidden(p) or (exclude is not None and p.is_relative_to(exclude))):
                continue
            if not explicit and not is_image_name(p):
                found.ignored += 1
                continue
            files.setdefault(p, None)

    for arg in arguments:
        path = Path(arg).expanduser()
        if path.is_dir():
            anchors.append(path.resolve())
            pattern = "**/*" if recursive else "*"
            take((p for p in path.glob(pattern) if p.is_file()), explicit=False)
        elif path.is_file():
            anchors.append(path.resolve().parent)
            take([path], explicit=True)
        elif glob.has_magic(arg):
            matches = [Path(m) for m in glob.glob(os.path.expanduser(arg), recursive=True)]
            matches = [m for m in matches if m.is_file()]
            if not matches:
                found.missing.append(arg)
                continue
            anchors.append(_glob_base(arg).resolve())
            take(matches, explicit=False)
        else:
            found.missing.append(arg)
    if files:
        root = Path(os.path.commonpath(anchors + [p.parent for p in files]))
        found.sources = _keys(list(files), root)
    return found


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: 'data/*/x*.png' -> 'data'."""
    parts = Path(os.path.expanduser(pattern)).parts
    base = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _keys(paths: list[Path], root: Path) -> list[Source]:
    rel = [p.relative_to(root) for p in paths]
    stems = [r.with_suffix("").as_posix() for r in rel]
    counts = Counter(stems)
    keys = [s if counts[s] == 1 else r.as_posix() for r, s in zip(rel, stems)]
    if len(set(keys)) != len(keys):  # e.g. x.jpg and x.jpg.png next to x.jpg.jpg: name them by hand
        clash = sorted(k for k, n in Counter(keys).items() if n > 1)
        raise ValueError(f"inputs: several images would write the same outputs ({', '.join(clash[:3])}); "
                         f"rename them or run them separately")
    return sorted((Source(p, k) for p, k in zip(paths, keys)), key=lambda s: s.key)
