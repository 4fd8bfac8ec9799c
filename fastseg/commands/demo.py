"""`fastseg demo`: the main job of the README."""
from __future__ import annotations

HELP = "the fused ops against their references, as a table"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from .bench import ops_table

    return ops_table()
