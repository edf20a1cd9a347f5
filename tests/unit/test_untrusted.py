"""JSON from the run (results files, probe events) is parsed within a depth bound."""

from __future__ import annotations

import json

import pytest

from labls.sandbox import untrusted


@pytest.mark.parametrize("as_bytes", [False, True])
def test_documents_deeper_than_the_bound_are_refused(as_bytes: bool) -> None:
    def doc(depth: int) -> str | bytes:
        text = "[" * (depth - 1) + '{"k": 1}' + "]" * (depth - 1)
        return text.encode() if as_bytes else text

    assert untrusted.loads(doc(untrusted.MAX_DEPTH)) is not None  # at the bound
    with pytest.raises(ValueError, match="deeper than"):
        untrusted.loads(doc(untrusted.MAX_DEPTH + 1))
    with pytest.raises(ValueError, match="too deep"):
        untrusted.loads(doc(100_000))  # the parser's own recursion limit


def test_brackets_inside_strings_do_not_count_as_levels() -> None:
    event = {"event": "open", "path": "/d/" + "[{" * 500}
    assert untrusted.loads(json.dumps(event)) == event
    wide = {"values": [[i] for i in range(1000)]}  # many brackets, depth 3
    assert untrusted.loads(json.dumps(wide)) == wide
