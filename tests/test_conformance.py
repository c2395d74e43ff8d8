"""docs/conformance.md is generated from the rule catalogue and the tests' rule markers, and cannot drift from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conformance import generate as conformance
from tests.conformance.catalogue import ID_FORMAT, RULES

ROOT = Path(__file__).resolve().parents[1]


def test_conformance_doc_is_up_to_date():
    assert conformance.DOC.read_text(encoding="utf-8") == conformance.generate(), (
        f"docs/conformance.md is out of date with the tests' rule markers; regenerate it with: {conformance.REGENERATE}"
    )


def test_rule_ids_are_well_formed_unique_and_in_section_order():
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids))
    assert all(ID_FORMAT.fullmatch(rule_id) for rule_id in ids), [i for i in ids if not ID_FORMAT.fullmatch(i)]
    sections = [tuple(int(n) for n in rule.section[1:].split(".")) for rule in RULES]
    assert sections == sorted(sections)
    assert all(rule.statement.endswith(".") and rule.source for rule in RULES)


def test_every_deliberate_difference_has_a_row_in_choices():
    choices = (ROOT / "docs" / "choices.md").read_text(encoding="utf-8")
    differing = sorted({claim.rule for claim in conformance.markers() if claim.differs})
    assert [rule for rule in differing if f"`{rule}`" not in choices] == []


def _write_test(folder: Path, body: str) -> Path:
    path = folder / "test_sample.py"
    path.write_text("import pytest\n\n" + body, encoding="utf-8")
    return path


def _generate_outside(folder: Path) -> str:
    return conformance.generate(folder, root=folder.parent)


def test_a_marker_naming_an_unknown_rule_is_refused(tmp_path):
    _write_test(tmp_path, '@pytest.mark.rule("§5/no-such-rule")\ndef test_x():\n    pass\n')
    with pytest.raises(conformance.MarkerError, match="no-such-rule"):
        _generate_outside(tmp_path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('ID = "§5/one-entry-per-certificate"\n@pytest.mark.rule(ID)\ndef test_x():\n    pass\n', "string literal"),
        ('@pytest.mark.rule("§5/one-entry-per-certificate", why="x")\ndef test_x():\n    pass\n', "differs="),
        ('@pytest.mark.rule("§5/one-entry-per-certificate", differs="")\ndef test_x():\n    pass\n', "must say how"),
        ('pytestmark = pytest.mark.rule("§5/one-entry-per-certificate")\ndef test_x():\n    pass\n', "directly on a test"),
    ],
)
def test_markers_the_generator_cannot_read_are_refused(tmp_path, body, message):
    _write_test(tmp_path, body)
    with pytest.raises(conformance.MarkerError, match=message):
        _generate_outside(tmp_path)


def test_a_claim_makes_its_rule_hold_or_differ(tmp_path):
    _write_test(
        tmp_path,
        '@pytest.mark.rule("§5/one-entry-per-certificate")\ndef test_a():\n    pass\n\n'
        '@pytest.mark.rule("§12/message-size-96kb", differs="not enforced")\ndef test_b():\n    pass\n',
    )
    rows = {line.split("|")[1].strip(" `"): line for line in _generate_outside(tmp_path).splitlines() if line.startswith("| `§")}
    assert len(rows) == len(RULES)
    assert "**holds**" in rows["§5/one-entry-per-certificate"] and "test_sample.py::test_a" in rows["§5/one-entry-per-certificate"]
    assert "**differs**" in rows["§12/message-size-96kb"] and "not enforced" in rows["§12/message-size-96kb"]
    assert "**no test yet**" in rows["§13/allocation-weight-range"]


def test_check_flag_passes_on_the_committed_file_and_fails_on_a_stale_one(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "tests.conformance.generate", "--check", "docs/conformance.md"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "conformance.md"
    stale.write_text("# old\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "tests.conformance.generate", "--check", str(stale)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "regenerate it with" in run.stderr
