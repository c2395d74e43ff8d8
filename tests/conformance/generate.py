"""Generate docs/conformance.md from the rule catalogue and the `@pytest.mark.rule(...)` markers of the tests.

    python -m tests.conformance.generate > docs/conformance.md          # regenerate
    python -m tests.conformance.generate --check docs/conformance.md    # exit 1 if the file is out of date

Markers are read from the test sources (no test is imported or run), so the marker's arguments must be string
literals; `markers()` reports any marker it cannot read, and the drift test fails on it.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conformance.catalogue import RULES

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
DOC = ROOT / "docs" / "conformance.md"
REGENERATE = "python -m tests.conformance.generate > docs/conformance.md"


@dataclass(frozen=True)
class Claim:
    """One test's claim about one rule."""

    rule: str
    test: str  # tests/cli/test_x.py::test_name
    differs: str | None = None


class MarkerError(ValueError):
    """A rule marker the generator cannot read."""


def _rule_marker(node: ast.expr) -> ast.Call | None:
    """The call node of a `pytest.mark.rule(...)` / `mark.rule(...)` decorator, else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "rule":
        owner = node.func.value
        if isinstance(owner, ast.Attribute) and owner.attr == "mark" or isinstance(owner, ast.Name) and owner.id == "mark":
            return node
    return None


def _claim(call: ast.Call, test: str) -> Claim:
    where = f"{test}: @pytest.mark.rule(...)"
    if len(call.args) != 1 or not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[0].value, str):
        raise MarkerError(f"{where} takes exactly one rule ID, a string literal")
    differs = None
    for keyword in call.keywords:
        if keyword.arg != "differs" or not isinstance(keyword.value, ast.Constant) or not isinstance(keyword.value.value, str):
            raise MarkerError(f"{where} takes only differs=\"...\" (a string literal) besides the rule ID")
        differs = keyword.value.value.strip() or None
        if differs is None:
            raise MarkerError(f"{where}: differs= must say how dpsctl differs")
    return Claim(call.args[0].value, test, differs)


def claims_in(path: Path, root: Path = ROOT) -> list[Claim]:
    """Every rule claim of the test functions (and test classes) in one file; tests are named relative to `root`."""
    source = path.read_text(encoding="utf-8")
    if "rule(" not in source:
        return []
    tree = ast.parse(source, filename=str(path))
    relative = path.relative_to(root).as_posix()
    found: list[Claim] = []
    counted: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:
                call = _rule_marker(decorator)
                if call is not None:
                    counted.add(id(call))
                    found.append(_claim(call, f"{relative}::{node.name}"))
    # A marker anywhere else (pytestmark, a parametrize mark, a variable) would be invisible here: refuse it.
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _rule_marker(node) is not None and id(node) not in counted:
            raise MarkerError(f"{relative}:{node.lineno}: put @pytest.mark.rule(...) directly on a test function or class")
    return found


def markers(tests: Path = TESTS, root: Path = ROOT) -> list[Claim]:
    """Every claim of every test file, in file and line order."""
    out: list[Claim] = []
    # pytest's default test file names: test_*.py and *_test.py.
    for path in sorted({*tests.rglob("test_*.py"), *tests.rglob("*_test.py")}):
        out.extend(claims_in(path, root))
    return out


def check_claims(claims: list[Claim]) -> list[str]:
    """Problems: markers naming no rule of the catalogue."""
    known = {rule.id for rule in RULES}
    return [f"{claim.test} names unknown rule {claim.rule!r} (see tests/conformance/catalogue.py)" for claim in claims if claim.rule not in known]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(claims: list[Claim]) -> str:
    """The Markdown document: one row per rule of the catalogue."""
    by_rule: dict[str, list[Claim]] = {}
    for claim in claims:
        by_rule.setdefault(claim.rule, []).append(claim)
    counts = {"holds": 0, "differs": 0, "no test yet": 0}
    rows = []
    for rule in RULES:
        mine = by_rule.get(rule.id, [])
        differs = sorted({c.differs for c in mine if c.differs})
        if not mine:
            status, why = "no test yet", "no test claims this rule yet"
        elif differs:
            status, why = "differs", "; ".join(differs) + " ([choices](choices.md))"
        else:
            status, why = "holds", ""
        counts[status] += 1
        tests = "<br>".join(f"`{c.test}`" for c in mine) or "—"
        rows.append(f"| `{rule.id}` | {_cell(rule.statement)} | {_cell(rule.source)} | **{status}** | {_cell(why)} | {tests} |")
    lines = [
        "# Conformance: dpsctl against the documented DPS",
        "",
        "<!-- Generated by `" + REGENERATE + "`; do not edit by hand. -->",
        "",
        "One row per checkable rule of the DPS reference (`dps-reference.md`, sections §N; sources as keyed there).",
        "A rule **holds** when the tests named beside it pass against the documented behaviour; it **differs** when",
        "those tests pin a deliberate difference, whose reason is given here and in [choices.md](choices.md).",
        "Rules come from `tests/conformance/catalogue.py`; tests claim them with `@pytest.mark.rule(\"ID\")`",
        "(`differs=\"...\"` for a deliberate difference). `tests/test_conformance.py` fails when this file is stale.",
        "",
        f"Summary: {len(RULES)} rules; {counts['holds']} hold, {counts['differs']} differ, {counts['no test yet']} have no test yet.",
        "",
        "| Rule | What the service does | Source | dpsctl | Why it differs | Tests |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    return "\n".join(lines)


def generate(tests: Path = TESTS, root: Path = ROOT) -> str:
    """The document for the current tests; raises MarkerError for unreadable or unknown markers."""
    claims = markers(tests, root)
    problems = check_claims(claims)
    if problems:
        raise MarkerError("\n".join(problems))
    return render(claims)


def main(argv: list[str]) -> int:
    """Print the document, or with --check FILE compare it with FILE."""
    try:
        text = generate()
    except MarkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if argv[:1] == ["--check"] and len(argv) == 2:
        current = Path(argv[1]).read_text(encoding="utf-8") if Path(argv[1]).exists() else ""
        if current != text:
            print(f"error: {argv[1]} is out of date; regenerate it with: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: python -m tests.conformance.generate [--check FILE]", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
