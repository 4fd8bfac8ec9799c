"""Every option of every command explains itself: help text, and its default unless it is a flag,
required, or a positional argument. `fastseg --version` prints the version."""
from __future__ import annotations

import argparse

import pytest

import fastseg
from fastseg.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_has_help_with_its_default(command):
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    formatter = sub._get_formatter()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        name = action.option_strings[0]
        assert action.help, f"fastseg {command} {name}: no help text"
        flag = action.nargs == 0
        if not (flag or action.required):
            assert "default" in formatter._get_help_string(action), f"fastseg {command} {name}: no default shown"


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastseg {fastseg.__version__}"
