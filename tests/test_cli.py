"""The `fastseg` entry point: every command listed by `fastseg --help`, and a command's module (with
the model code, ONNX Runtime, matplotlib behind it) imported only when that command runs."""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import textwrap

import pytest

from fastseg.cli import COMMANDS, build_parser

# Runs `fastseg ARGS` in a fresh interpreter and prints its output and the modules it imported.
PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from fastseg.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(sys.argv[1:])
        except SystemExit:
            pass
    print(json.dumps({"out": out.getvalue(), "modules": sorted(sys.modules)}))
""")
HEAVY = ("fastseg.models", "fastseg.segmenter", "fastseg.ops", "fastseg.data", "fastseg.bench", "fastseg.crf",
         "onnxruntime", "matplotlib", "triton", "torchvision", "safetensors")


def probe(*args: str) -> tuple[str, list[str]]:
    run = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    return result["out"], result["modules"]


def loaded(modules: list[str], prefix: str) -> bool:
    return any(m == prefix or m.startswith(prefix + ".") for m in modules)


def test_help_lists_every_command_and_imports_none():
    out, modules = probe("--help")
    text = " ".join(out.split())  # argparse wraps the help lines
    for name, spec in COMMANDS.items():
        assert f"{name} {spec.help}" in text, name
    assert [m for m in modules if m.startswith("fastseg.commands.")] == []
    assert [m for m in HEAVY if loaded(modules, m)] == []


def test_a_command_imports_its_own_module_only():
    out, modules = probe("predict", "--help")
    assert "--out" in out
    assert "fastseg.commands.predict" in modules
    others = [f"fastseg.commands.{spec.module}" for name, spec in COMMANDS.items() if name != "predict"]
    assert [m for m in others if m in modules] == []
    assert not loaded(modules, "onnxruntime") and not loaded(modules, "matplotlib")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_builds_its_arguments(name):
    module = importlib.import_module(f"fastseg.commands.{COMMANDS[name].module}")
    assert callable(module.run)
    parser = build_parser(name)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert subparsers.choices[name].description == COMMANDS[name].help
    with pytest.raises(SystemExit) as info:
        parser.parse_args([name, "--help"])
    assert info.value.code == 0
