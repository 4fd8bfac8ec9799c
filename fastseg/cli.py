"""The `fastseg` command line: one module per subcommand in fastseg/commands/.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``
(the exit status). Modules are imported only when their command runs, so `fastseg --help` is quick.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module in fastseg.commands (the order is the order of `fastseg --help`)
COMMANDS = {
    "predict": "predict",
    "eval": "evaluate",
    "bench": "bench",
    "export": "export",
    "demo": "demo",
}


def _module(name: str):
    return importlib.import_module(f"fastseg.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastseg", description="fastseg: fast semantic segmentation")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _module(name)
        except ModuleNotFoundError as exc:
            if exc.name != f"fastseg.commands.{COMMANDS[name]}":
                raise
            continue  # a command not written yet
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
