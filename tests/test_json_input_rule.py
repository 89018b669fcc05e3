"""One rule for JSON a user types or uploads (``studio.validation.parse_json``): a batch script in
JSON and the provider options box give the same clear error, line and column, and text nested past
Python's recursion limit is a refused request, never a RecursionError (a 500 on the web API)."""

from __future__ import annotations

import pytest

from studio.application.forms import provider_options
from studio.errors import InvalidRequest
from studio.scripts import parse_script
from studio.validation import parse_json

HOSTILE = "[" * 100_000


def test_provider_options_refuse_hostile_nesting_and_name_the_field():
    with pytest.raises(InvalidRequest, match=r"^provider options: line 1: the JSON is nested too deeply"):
        provider_options(HOSTILE)
    with pytest.raises(InvalidRequest, match=r"^provider options: line 1, column 6: not valid JSON"):
        provider_options('{"a":')
    with pytest.raises(InvalidRequest, match=r"must be a JSON object"):
        provider_options("[1]")
    assert provider_options('{"background": "transparent"}') == {"background": "transparent"}


def test_scripts_and_options_share_the_rule():
    with pytest.raises(InvalidRequest, match=r"^line 2, column 15: not valid JSON"):
        parse_script('[{"text": "a"},\n {"text": "b",}\n]', format="json")
    with pytest.raises(InvalidRequest, match=r"^line 1: the JSON is nested too deeply"):
        parse_script(HOSTILE, format="json")
    assert parse_json("[1, 2]") == [1, 2]
