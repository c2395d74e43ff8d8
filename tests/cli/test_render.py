"""The render layer's laws: tables fit any width without breaking a row, TSV keeps one line per record."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dpsctl.cli.render import format_table, shorten, text_width, to_tsv, tsv_value

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
CELLS = st.one_of(st.none(), st.booleans(), st.integers(), TEXT)


@settings(max_examples=200, deadline=None)
@given(
    columns=st.lists(st.from_regex(r"[A-J]{1,6}( [A-J]{1,6})?", fullmatch=True), min_size=1, max_size=8, unique=True),
    data=st.data(),
    width=st.integers(min_value=10, max_value=250),
)
def test_a_table_fits_its_width_one_line_per_row(columns, data, width):
    rows = data.draw(st.lists(st.lists(CELLS, min_size=len(columns), max_size=len(columns)), max_size=12))
    drop = data.draw(st.lists(st.sampled_from(columns), unique=True))
    lines = format_table(columns, rows, drop=drop, width=width).split("\n")[:-1]
    assert len(lines) == len(rows) + 2  # header, rule, rows: nothing wrapped
    assert all(text_width(line) <= width for line in lines), lines
    assert lines[0].startswith(shorten(columns[0], width)[:1])  # the first column is kept


def test_low_value_columns_go_before_anything_is_shortened():
    rows = [("device-0001", "assigned", "2026-11-30T23:29:36.6204790Z", "hub-west.azure-devices.net")]
    text = format_table(("ID", "STATUS", "UPDATED", "HUB"), rows, drop=("UPDATED",), width=60)
    assert "UPDATED" not in text and "hub-west.azure-devices.net" in text and "…" not in text
    narrow = format_table(("ID", "STATUS", "UPDATED", "HUB"), rows, drop=("UPDATED",), width=40)
    assert "…" in narrow and all(len(line) <= 40 for line in narrow.splitlines())


def test_wide_characters_count_two_cells():
    text = format_table(("NAME", "NOTE"), [("温度センサー", "x" * 50)], width=30)
    assert all(text_width(line) <= 30 for line in text.splitlines())


@given(st.lists(st.dictionaries(st.sampled_from("abcd"), CELLS | st.lists(TEXT, max_size=2)), max_size=10))
def test_tsv_has_one_line_per_record_and_never_splits_a_field(records):
    out = to_tsv(records)
    lines = out.split("\n")[:-1] if out else []
    assert len(lines) == len(records)
    for line, record in zip(lines, records):
        assert line.split("\t") == [tsv_value(v) for v in record.values()] or (not record and line == "")


def test_tsv_values():
    assert to_tsv("bare") == "bare\n" and to_tsv(["a", "b"]) == "a\nb\n" and to_tsv(None) == ""
    # booleans as az (knack) prints them: True/False inside a record, true/false alone on a line (issue 15)
    assert to_tsv([{"a": None, "b": True, "c": {"x": 1}, "d": "t\tn\n"}]) == '\tTrue\t{"x":1}\tt\\tn\\n\n'
    assert to_tsv(True) == "true\n" and to_tsv([False, True]) == "false\ntrue\n" and to_tsv([[False]]) == "False\n"
