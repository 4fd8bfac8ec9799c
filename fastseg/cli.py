"""The `fastseg` command line."""
from __future__ import annotations

import argparse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the fused ops against their references, as a table")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run

        return run()
    return 2
