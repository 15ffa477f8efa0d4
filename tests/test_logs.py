"""wsproxy.logs.logfmt: a value the client controls stays one field on one log line."""

from __future__ import annotations

import pytest

from wsproxy.logs import MAX_FIELD_CHARS, logfmt


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("done", "done"),
        ("/a.txt?x=1", "/a.txt?x=1"),
        ("", '""'),
        ("going away", '"going away"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r"back\\slash"),
        ("bye\nforged=1", r"bye\nforged=1"),
        ("a\r\nb c", r'"a\r\nb c"'),
        ("\x1b[2J\x00\x7f", r"\x1b[2J\x00\x7f"),
        ("tab\there", r"tab\there"),
        ("\u202eevil", r"\u202eevil"),  # a bidi override would reorder the line on display
        ("café", "café"),  # printable text stays readable
        (OSError(2, "No such file"), '"[Errno 2] No such file"'),
    ],
)
def test_logfmt(value: object, field: str) -> None:
    assert logfmt(value) == field


def test_logfmt_cuts_long_values() -> None:
    field = logfmt("x" * (MAX_FIELD_CHARS + 50))
    assert field == "x" * MAX_FIELD_CHARS + "..."
