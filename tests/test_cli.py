"""The command-line entry point: version, help, and a smoke command."""

import argparse
import subprocess
import sys

import pytest

from ciiv import __version__
from ciiv.cli import COMMANDS, build_parser, main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    help_text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in help_text


def test_top_level_help_is_for_users(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out
    assert "Wiring only" not in text and "quick start" in text
    assert "ciiv demo" in text and "ciiv train" in text and "ciiv eval" in text


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_of_every_command_says_what_it_does(command, capsys):
    parser = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = [a for a in sub.choices[command]._actions if a.dest != "help"]
    assert options
    for action in options:
        assert action.help and len(action.help.split()) >= 3, (command, action.dest)
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert f"ciiv {command}" in text  # the usage examples of the command's docstring
    assert "``" not in text


def test_info_prints_reference_statistics_and_model_shapes(capsys):
    assert main(["info", "--image-size", "32", "--backbone", "small_cnn", "--views", "9"]) == 0
    out = capsys.readouterr().out
    assert "0.8013" in out and "0.9535" in out and "0.9444" in out
    # The shapes a CiiV model on the backbone produces for a batch of 2 images.
    assert "[2, 3, 32, 32]" in out and "[18, 3, 32, 32]" in out  # the views folded: L * B
    assert "[9, 2, 10]" in out and "[2, 10]" in out


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "ciiv", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "COMMAND" in result.stdout
