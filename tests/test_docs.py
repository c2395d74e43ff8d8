"""The docs stay true to the code: the CLI reference is generated from the app, and the prose names real commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dpsctl.cli import reference
from dpsctl.cli.errors import ExitCode
from tests.helpers.docs import COMMAND_LINE as _COMMAND_LINE
from tests.helpers.docs import code_in as _code_in
from tests.helpers.docs import command_paths as _paths

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "cli-reference.md"


def _commands():
    return reference.walk(reference.root_command())


# --------------------------------------------------------------------------- the generated reference


def test_cli_reference_is_up_to_date():
    expected = reference.generate()
    current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    assert current == expected, (
        f"docs/cli-reference.md is out of date with the CLI; regenerate it with: {reference.REGENERATE} "
        "(run from the repository root)"
    )


def test_generation_is_deterministic():
    assert reference.generate() == reference.generate()


def test_reference_has_a_section_for_every_command():
    text = reference.generate()
    for path in _paths():
        assert f"\n## {' '.join(path)}\n" in text, f"no section for {' '.join(path)}"


def test_reference_shows_options_defaults_and_env_vars():
    text = reference.generate()
    assert "| `--db TEXT` | `dps.json` |" in text
    assert "Env: `DPSCTL_DB`" in text
    assert "| `-o, --output table\\|json\\|yaml\\|tsv\\|none` | `table` |" in text
    assert "dpsctl [GLOBAL OPTIONS] enrollment add [OPTIONS] REGISTRATION_ID" in text
    assert "| `--attestation symmetricKey\\|x509\\|tpm` |  | Attestation type" in text and "Required." in text
    assert "Repeatable." in text  # --hub on enrollments


def test_check_flag_passes_on_a_fresh_file_and_fails_on_a_stale_one(tmp_path):
    good = tmp_path / "good.md"
    good.write_text(reference.generate(), encoding="utf-8")
    stale = tmp_path / "stale.md"
    stale.write_text(reference.generate().replace("Link an IoT hub", "Link a hub"), encoding="utf-8")
    command = [sys.executable, "-m", "dpsctl.cli.reference", "--check"]
    ok = subprocess.run([*command, str(good)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*command, str(stale)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 1
    assert "out of date" in bad.stderr and reference.REGENERATE in bad.stderr
    missing = subprocess.run([*command, str(tmp_path / "absent.md")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert missing.returncode == 1 and reference.REGENERATE in missing.stderr


def test_module_prints_the_reference_to_stdout():
    run = subprocess.run([sys.executable, "-m", "dpsctl.cli.reference"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == reference.generate()


# --------------------------------------------------------------------------- help texts


@pytest.mark.parametrize("path", sorted(" ".join(p) for p, _ in _commands()))
def test_every_command_has_help(path):
    command = dict((" ".join(p), c) for p, c in _commands())[path]
    assert reference.help_text(command), f"`{path}` has no help text: give it a docstring (or help= for a group)"


def test_every_option_and_argument_has_help():
    missing = []
    for path, command in _commands():
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{' '.join(path)} {'/'.join(param.opts)}")
    assert not missing, "parameters without help text: " + ", ".join(missing)


# --------------------------------------------------------------------------- the prose docs


def _doc_files() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_docs_exist():
    names = {p.name for p in _doc_files()}
    for name in ("index.md", "store.md", "exit-codes.md", "provisioning.md", "choices.md", "tutorial.md", "import-export.md", "cli-reference.md"):
        assert name in names, f"docs/{name} is missing"


@pytest.mark.parametrize("doc", [p.name for p in sorted(DOCS.glob("*.md"))])
def test_relative_links_resolve(doc):
    text = (DOCS / doc).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (DOCS / target).resolve().exists(), f"docs/{doc} links to {target}, which does not exist"


# az-mapping.md names az's hidden aliases; tests/cli/test_az_mapping.py checks it against the app, hidden commands included.
@pytest.mark.parametrize("doc", [p.name for p in sorted(DOCS.glob("*.md")) if p.name not in ("cli-reference.md", "az-mapping.md")])
def test_commands_named_in_docs_exist(doc):
    """Every `dpsctl COMMAND [SUB-COMMAND]` shown as code is a real command path (typos and removed commands fail)."""
    paths = _paths()
    groups = {path for path, command in _commands() if reference.is_group(command)}
    for code in _code_in((DOCS / doc).read_text(encoding="utf-8")):
        for match in _COMMAND_LINE.finditer(code):
            words = match.group(1).split()
            if words[:1] == ["--db"]:
                words = words[2:]
            path: tuple[str, ...] = ("dpsctl",)
            for word in words:
                if (*path, word) not in paths:
                    break
                path = (*path, word)
            shown = "dpsctl " + " ".join(words)
            assert len(path) > 1 or not words, f"docs/{doc} shows `{shown}`, but dpsctl has no command {words[0]!r}"
            if path in groups and len(words) >= len(path):
                raise AssertionError(f"docs/{doc} shows `{shown}`, but `{' '.join(path)}` has no sub-command {words[len(path) - 1]!r}")


def test_exit_codes_doc_lists_every_code():
    text = (DOCS / "exit-codes.md").read_text(encoding="utf-8")
    for code in ExitCode:
        assert re.search(rf"^\|\s*{int(code)}\s*\|", text, re.M), f"docs/exit-codes.md has no row for exit code {int(code)} ({code.name})"

# The tutorial and every other shell block of the docs run in tests/test_doc_sessions.py.
