"""The buffers a loop reuses, by shape: a small cache that keeps the values of its latest keys.

A video loop of one frame size asks for the same buffers every frame; a list input of several sizes
needs one set per size; a loop whose frame size keeps changing must not keep every size it has seen
alive. So the values of the `keep` most recently used keys stay, and the least recently used one
goes when a new key needs room.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

__all__ = ["MruCache"]


class MruCache(Generic[V]):
    """Values by key, at most `keep` of them; not shared between threads (each loop owns one)."""

    def __init__(self, keep: int):
        if keep < 1:
            raise ValueError(f"keep: must be at least 1, got {keep!r}")
        self.keep = int(keep)
        self._values: dict = {}  # insertion order: least recently used first

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value kept for `key`, else `make()`'s (kept in place of the least recently used)."""
        value = self._values.pop(key, None)
        if value is None:
            value = make()
            if len(self._values) >= self.keep:
                self._values.pop(next(iter(self._values)))
        self._values[key] = value
        return value

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._values
