"""The custom allocation api-version rule (reference §1: at least 2018-09-01-preview), as a law over all dates."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpsctl.core.errors import InvalidInput
from dpsctl.core.validation import validate_custom_api_version

MINIMUM = date(2018, 9, 1)


@pytest.mark.rule("§1/custom-allocation-api-version-minimum")
@given(day=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)), preview=st.booleans())
def test_ref1_an_api_version_is_accepted_exactly_from_2018_09_01_preview_on(day, preview):
    version = day.isoformat() + ("-preview" if preview else "")
    if (day, not preview) >= (MINIMUM, False):
        assert validate_custom_api_version(version) == version
    else:
        with pytest.raises(InvalidInput, match="older than 2018-09-01-preview"):
            validate_custom_api_version(version)


@given(text=st.text(max_size=40))
def test_any_text_is_an_api_version_or_invalid_input(text):
    try:
        version = validate_custom_api_version(text)
    except InvalidInput as error:
        assert "api-version" in error.message and "2018-09-01-preview" in (error.hint or "") + error.message
        return
    assert date.fromisoformat(version[:10]) >= MINIMUM
