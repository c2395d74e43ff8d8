"""Start-up stays cheap: CI loops call dpsctl thousands of times."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# (Typer itself brings pydantic in to build a sub-command's parameters; that is not ours to avoid.)
HEAVY = ("cryptography", "tinydb", "sqlite3", "yaml", "rich")

PROBE = """
import json, os, sys
sys.argv = ["dpsctl", *json.loads(os.environ["DPSCTL_PROBE_ARGS"])]
from dpsctl.cli.app import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--version"], ["--help"], [], ["enrollment", "--help"], ["provision", "--help"]])
def test_help_and_version_import_no_heavy_module(args):
    env = {**os.environ, "DPSCTL_PROBE_ARGS": json.dumps(args)}
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)
    heavy = sorted(set(json.loads(run.stderr.strip().splitlines()[-1])) & set(HEAVY))
    assert heavy == [], f"dpsctl {' '.join(args)} imported {heavy}"


def test_the_command_table_matches_the_commands():
    from dpsctl.cli.app import COMMANDS, load_command

    for name, (_, _, short_help) in COMMANDS.items():
        command = load_command(name)
        actual = (command.help or "").strip().split("\n\n")[0].replace("\n", " ")
        assert actual == short_help, f"COMMANDS[{name!r}] help differs from the command's own: {actual!r}"
