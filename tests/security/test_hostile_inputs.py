"""Every bad input of docs/hostile-inputs.md, through the real CLI on both backends: the documented exit code,
one `error:` line (and maybe a `hint:`), no traceback, clean stdout, and the store unchanged by content."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from dpsctl.store.schema import key_of
from tests.security.hostile_cases import AREAS, CASES, Case, render_markdown, resolve, shown_error

DOC = Path(__file__).resolve().parents[2] / "docs" / "hostile-inputs.md"
STATUS_OF_CODE = {5: "unauthorized", 6: "disabled", 7: "failed"}


def test_the_document_lists_exactly_these_cases():
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/hostile-inputs.md is out of date: python -m tests.security.hostile_cases > docs/hostile-inputs.md"
    )


def test_the_table_is_wide_enough():
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.area for c in CASES} == set(AREAS)
    for c in CASES:
        assert c.code in (1, 2, 3, 4, 5, 6, 7, 8), c
        assert (c.writes != "nothing") == (c.code in STATUS_OF_CODE and c.args[0] == "provision" and "--batch" not in c.args), c


def _normalised(text: str, files_folder: Path, webhook: str) -> str:
    text = text.replace(f"{files_folder}/", "").replace(str(files_folder), ".")
    text = text.replace(webhook, "WEBHOOK")
    return text.replace(f"'{os.path.basename(sys.executable)}'", "'python'")


def _matches(documented: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in documented.split("…"))
    return re.fullmatch(pattern, actual, re.DOTALL) is not None


def _by_key(snapshot: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    return {kind: {key_of(kind, doc): doc for doc in docs} for kind, docs in snapshot.items()}


def _check_store(c: Case, before: dict, after: dict) -> None:
    """Unchanged, or changed exactly as a refused provisioning attempt is documented to change it."""
    if c.writes == "nothing":
        assert after == before, f"{c.id}: the store changed"
        return
    old, new = _by_key(before), _by_key(after)
    status = STATUS_OF_CODE[c.code]
    allowed = {"history"} | ({"registrations"} if c.writes == "registration" else set())
    for kind in set(old) | set(new):
        if kind not in allowed:
            assert old.get(kind) == new.get(kind), f"{c.id}: {kind} changed"
    # Exactly one new history entry, for this attempt and with this outcome (the history keeps 1,000; far from full here).
    added = [doc for key, doc in new["history"].items() if key not in old.get("history", {})]
    assert len(added) == 1 and len(new["history"]) == len(old.get("history", {})) + 1, added
    assert added[0]["status"] == status and added[0]["assignedHub"] is None, added[0]
    # The service record and the operation counters are untouched (a refusal is no billable operation).
    if c.writes == "registration":
        changed = {k for k in set(old.get("registrations", {})) | set(new.get("registrations", {})) if old.get("registrations", {}).get(k) != new.get("registrations", {}).get(k)}
        assert changed == {added[0]["registrationId"].lower()}, changed
        record = new["registrations"][added[0]["registrationId"].lower()]
        assert record["status"] == status and "assignedHub" not in record, record


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_hostile_input(c: Case, dps, hostile_store, hostile_files, local_webhook):
    hostile_store(dps)
    args = resolve(c, hostile_files)
    before = dps.snapshot()

    run = dps(*args)

    assert run.exit_code == c.code, run
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run
    lines = run.stderr.splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), run
    assert len(lines) == 1 or lines[1].startswith("hint: "), run
    error = _normalised(lines[0][len("error: ") :], hostile_files.folder, local_webhook.base)
    assert _matches(shown_error(c), error), f"documented: {shown_error(c)!r}\nactual:     {error!r}"
    if "-o" in args and args[args.index("-o") + 1] == "json" and run.stdout:
        json.loads(run.stdout)  # a refused provision prints its outcome; nothing else prints half a document
    else:
        assert run.stdout == "", run
    _check_store(c, before, dps.snapshot())
