"""The `fastseg` command line: one module per subcommand in fastseg/commands/.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status); its
one-line help lives in COMMANDS below. A command's module, and with it the model code, ONNX Runtime
or matplotlib it needs, is imported only when that command runs: `fastseg --help` reads the table
alone, and `fastseg predict ...` loads nothing of eval, bench or export.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    module: str   # in fastseg.commands
    help: str     # the line of `fastseg --help`, and the description of `fastseg COMMAND --help`


# in the order of `fastseg --help`
COMMANDS = {
    "predict": Command("predict", "segment image files, folders or globs into label PNGs, colour masks and overlays"),
    "eval": Command("evaluate", "evaluate a model on a dataset split: per-class IoU table, mIoU, confusion-matrix "
                                "picture"),
    "bench": Command("bench", "fastseg's ops and models against their references: results file, table and plot "
                              "of speed-ups"),
    "export": Command("export", "export a model to ONNX (image in, labels out; dynamic batch and size)"),
    "quantize": Command("quantize", "quantize a model to a symmetric int8 QDQ ONNX graph, calibrated on real frames"),
    "demo": Command("demo", "segment CamVid val frames with the default model and write pictures (prediction, "
                            "truth, CRF)"),
}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it (or the option is
    a flag, off by default, or required)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or action.required or not action.option_strings or default is None
                or default is False or default is argparse.SUPPRESS):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else default
        return f"{text} (default: {shown})".replace("%", "%%")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command with its help line; the arguments of `command` alone (its module is imported)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="fastseg", description="fastseg: fast semantic segmentation")
    parser.add_argument("--version", action="version", version=f"fastseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, spec in COMMANDS.items():
        subparser = sub.add_parser(name, help=spec.help, description=spec.help, formatter_class=DefaultsHelpFormatter)
        if name == command:
            module = importlib.import_module(f"fastseg.commands.{spec.module}")
            module.add_arguments(subparser)
            subparser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    # `fastseg` itself takes no option but --help / --version, so the first word not starting with "-" is the command
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
