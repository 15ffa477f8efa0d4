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


def test_line_formatter_writes_what_logging_formatter_writes() -> None:
    """The cached time text: the same line as logging's own formatter, also when the second
    changes between two lines and when a line comes from an earlier second than the last."""
    import logging

    from wsproxy.logs import LOG_FORMAT, LineFormatter

    ours, theirs = LineFormatter(LOG_FORMAT), logging.Formatter(LOG_FORMAT)
    record = logging.LogRecord("wsproxy.session", logging.INFO, "", 0, "open peer=%s", ("a",), None)
    base = int(record.created)
    for created in (base + 0.0004, base + 0.9996, base + 1.5, base + 61.25, base + 0.5):
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == theirs.format(record)
