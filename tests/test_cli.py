"""The command-line entry point: version, help, and a smoke command."""

import subprocess
import sys

import pytest

from ciiv import __version__
from ciiv.cli import COMMANDS, main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    help_text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in help_text


def test_info_prints_reference_statistics(capsys):
    assert main(["info", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "0.8013" in out and "0.9535" in out and "0.9444" in out


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "ciiv", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "COMMAND" in result.stdout
