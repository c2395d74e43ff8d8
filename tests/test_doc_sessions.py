"""The docs cannot drift: every shell block of README.md and docs/*.md runs, and prints what the doc shows.

The convention (docs/index.md, "Docs that run", says the same for writers):

- Blocks fenced ```console, ```sh, ```bash or ```shell run. Other blocks (``` alone, ```json, ```yaml, ```js,
  ```python...) are text and never run.
- Each file is one bash session (`set -o pipefail`) in a fresh empty folder: its blocks run in order and share
  files and variables, as for a reader who follows the page. The installed `dpsctl` is first on PATH; no
  DPSCTL_* variable is set and COLUMNS is unset, so tables are 80 columns wide, as when piped. The folder holds
  a link to the repository's sample-enrollments/, which docs name by that relative path.
- ```console blocks: `$ ` starts a command (a line ending in `\\` continues it); the lines up to the next `$ `
  are what it prints, stdout and stderr together. A command whose shown output has a line starting `error: `
  must fail (non-zero exit), every other command must succeed. A command shown without output is run and its
  exit status checked, but its output is not compared.
- ```sh / ```bash / ```shell blocks: every command must succeed; nothing is compared.
- A block of any language whose info string names a file, like ```yaml file=bad.yaml, is written to that file
  in the session's folder when the session reaches it (so a later command can use the file the doc shows).
- Placeholders in shown output: `<KEY>` Base64 text, `<TIME>` an ISO 8601 UTC time, `<SCOPE>` an ID scope,
  `<HEX>` hex digits, `<N>` a number, `<...>` any text within the line, and a line holding only `...` any
  number of lines (none included). Runs of spaces match runs of spaces of any length (column widths follow the
  data), and trailing spaces are ignored.
- An HTML comment on the line right before a block changes how it runs:
  `<!-- doctest: skip REASON -->`: the block is not run (it needs files the reader has, runs forever, ...);
  `<!-- doctest: needs serve [ARGS] -->`: `dpsctl serve ARGS` runs in the background (in the session's folder,
  on its store) while the block runs, and is stopped after it;
  `<!-- doctest: new session -->`: the block, and those after it, run in another fresh folder (a page that
  shows the same steps twice, short then step by step);
  `<!-- doctest: needs NAME -->` (e.g. `postgres`): the block runs only when the environment variable
  DPSCTL_DOCTEST_NAME (upper case) is set, and sees it; otherwise it is skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.docs import Block, Command, parse

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "cli-reference.md")]

_PLACEHOLDERS = {
    "<KEY>": r"[A-Za-z0-9+/]+={0,2}",
    "<TIME>": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z",
    "<SCOPE>": r"0ne[0-9A-F]{8}",
    "<HEX>": r"[0-9A-Fa-f]+",
    "<N>": r"-?\d[\d,.]*",
    "<...>": r".*?",
}
_TOKEN = re.compile("(" + "|".join(re.escape(p) for p in _PLACEHOLDERS) + r"| +)")


def line_pattern(shown: str) -> re.Pattern[str]:
    """A shown output line as a regular expression: placeholders, flexible runs of spaces."""
    parts = []
    for piece in _TOKEN.split(shown.rstrip()):
        if not piece:
            continue
        if piece in _PLACEHOLDERS:
            parts.append(_PLACEHOLDERS[piece])
        elif piece.strip() == "":
            parts.append(" +")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def matches(shown: list[str], actual: list[str]) -> bool:
    """True when the actual lines are what the doc shows (placeholders and `...` lines included)."""
    actual = [line.rstrip() for line in actual]
    while actual and not actual[-1]:
        actual.pop()

    def at(s: int, a: int) -> bool:
        if s == len(shown):
            return a == len(actual)
        if shown[s].strip() == "...":
            return any(at(s + 1, k) for k in range(a, len(actual) + 1))
        return a < len(actual) and line_pattern(shown[s]).fullmatch(actual[a]) is not None and at(s + 1, a + 1)

    return at(0, 0)


# --------------------------------------------------------------------------- the session


def _script(blocks: list[Block]) -> tuple[str, list[tuple[Block, Command]], list[str]]:
    """One bash script for a doc: every command framed by markers that carry its output and exit status."""
    lines = ["set -o pipefail", "cd \"$DOCTEST_DIR\""]
    run: list[tuple[Block, Command]] = []
    skipped = []
    for block in blocks:
        if block.lang == "file":
            lines.append(f"cat > {block.needs[0]} <<'DOCTEST_EOF'\n{block.commands[0].text}DOCTEST_EOF")
            continue
        if block.new_session:
            folder = f'"$DOCTEST_DIR/session-{block.line}"'
            lines.append(f'mkdir {folder} && cd {folder} && ln -s "$DOCTEST_DIR/sample-enrollments" sample-enrollments')
        if block.skip:
            skipped.append(f"line {block.line}: {block.skip}")
            continue
        needs = block.needs[0] if block.needs else None
        if needs and needs != "serve" and not os.environ.get(f"DPSCTL_DOCTEST_{needs.upper()}"):
            skipped.append(f"line {block.line}: needs {needs} (set DPSCTL_DOCTEST_{needs.upper()} to run it)")
            continue
        if needs == "serve":
            args = " ".join(block.needs[1:])
            lines += [
                f"dpsctl serve {args} >serve.out 2>&1 & DOCTEST_SERVE=$!",
                "for _ in $(seq 200); do grep -q . serve.out 2>/dev/null && break; sleep 0.1; done",
            ]
        for command in block.commands:
            n = len(run)
            run.append((block, command))
            lines.append(f'echo "@@CMD {n}@@"')
            if block.lang == "console":
                lines.append("{ " + command.text + "\n} 2>&1")
                lines.append(f'echo "@@EXIT {n} $?@@"')
            else:
                # Every command of a script block must succeed: the ERR trap reports the first that does not.
                lines.append(f"DOCTEST_FAILED=0; trap 'DOCTEST_FAILED=$?; trap - ERR' ERR\n{{ {command.text}\n}} 2>&1\ntrap - ERR")
                lines.append(f'echo "@@EXIT {n} $DOCTEST_FAILED@@"')
        if needs == "serve":
            lines += ["kill -TERM $DOCTEST_SERVE; wait $DOCTEST_SERVE 2>/dev/null"]
    return "\n".join(lines) + "\n", run, skipped


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_doc_runs_as_shown(doc: Path, tmp_path: Path) -> None:
    """Every shell block of the doc runs in a fresh folder, exits as shown, and prints what the doc shows."""
    blocks = parse(doc.read_text(encoding="utf-8"))
    script, commands, _skipped = _script(blocks)
    if not commands:
        pytest.skip("no block to run")
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPSCTL_") or k.startswith("DPSCTL_DOCTEST_")}
    env.pop("COLUMNS", None)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", DOCTEST_DIR=str(tmp_path), PYTHONUNBUFFERED="1", HOME=str(tmp_path))
    (tmp_path / "sample-enrollments").symlink_to(ROOT / "sample-enrollments")
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    results = {int(m.group(1)): (int(m.group(3)), m.group(2)) for m in re.finditer(r"@@CMD (\d+)@@\n(.*?)@@EXIT \1 (\d+)@@", done.stdout, re.S)}
    name = doc.relative_to(ROOT)
    for n, (block, command) in enumerate(commands):
        assert n in results, f"{name}:{command.line}: `{command.text}` did not finish (the session stopped):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        code, output = results[n]
        where = f"{name}:{command.line}: `{command.text}`"
        if block.lang != "console":
            assert code == 0, f"{where} failed (exit {code}):\n{output}"
            continue
        assert (code != 0) == command.must_fail, f"{where} exited {code}, but the doc shows it {'failing' if command.must_fail else 'succeeding'}:\n{output}"
        if command.shown is not None:
            actual = output.splitlines()
            assert matches(command.shown, actual), f"{where} printed:\n{output}\nbut the doc shows:\n" + "\n".join(command.shown)


# --------------------------------------------------------------------------- the convention itself


def test_placeholders_and_ellipsis_lines():
    assert matches(["key: <KEY>", "at <TIME>"], ["key: AbC+/9==", "at 2026-11-30T23:29:36.6204790Z"])
    assert matches(["A  B", "...", "end"], ["A      B", "x", "y", "end"])
    assert matches(["...", "end"], ["end"]) and not matches(["A  B"], ["AB"])
    assert not matches(["a <N>"], ["a b"]) and matches(["id <SCOPE> <...>!"], ["id 0ne0000A0A0 whatever here!"])


def test_blocks_marks_and_commands_are_read_as_documented():
    text = (
        "```console\n$ dpsctl hub add h \\\n  --weight 2\nNAME  WEIGHT\n$ dpsctl hub show x\nerror: no\n```\n"
        "<!-- doctest: skip needs a file -->\n```sh\ndpsctl import big.json\n```\n"
        "<!-- doctest: needs serve --port 0 -->\n```bash\ncurl -k https://localhost\n```\n```json\n{}\n```\n"
    )
    console, skipped, served = parse(text)
    assert [(b.lang, b.needs) for b in parse("```yaml file=bad.yaml\na: 1\n```\n")] == [("file", ["bad.yaml"])]
    assert [c.text for c in console.commands] == ["dpsctl hub add h \\\n  --weight 2", "dpsctl hub show x"]
    assert console.commands[0].shown == ["NAME  WEIGHT"] and console.commands[1].must_fail
    assert skipped.skip == "needs a file" and served.needs == ["serve", "--port", "0"]
