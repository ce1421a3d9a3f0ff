"""Every `gluonface ...` command shown in README.md exists, accepts the options shown, and has a working --help."""
import os
import re
import shlex
import subprocess
import sys

import pytest

from gluonface.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("gluonface "):
                commands.append(line)
    return commands


def test_readme_shows_commands_for_every_task():
    subs = {shlex.split(c)[1] for c in readme_commands()}
    assert {"pack", "inspect", "pairs", "align", "train", "launch", "eval", "export", "embed"} <= subs


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on an unknown option or a missing argument
        pytest.fail(f"README command does not parse ({exc.code}): {command}")


def test_every_subcommand_help_runs():
    subs = sorted({shlex.split(c)[1] for c in readme_commands()} | {"doctor", "synth", "flops"})
    for sub in subs:
        res = subprocess.run([sys.executable, "-m", "gluonface", sub, "--help"], capture_output=True, text=True)
        assert res.returncode == 0, (sub, res.stderr[-500:])
        assert "usage: gluonface " + sub in res.stdout
