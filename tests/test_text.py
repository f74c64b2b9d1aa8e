"""Plain-text output: the table renderer and the units of times and sizes."""

from __future__ import annotations

import pytest

from convkit.text import format_bytes, format_seconds, format_table


def test_table_aligns_columns_and_drops_trailing_spaces():
    lines = format_table(("name", "time", "note"), [("a", "1 ms", ""), ("longer", "10 ms", "x")],
                         right={"time"})
    assert lines == [
        "name     time  note",
        "a        1 ms",
        "longer  10 ms  x",
    ]


def test_table_with_no_rows_is_its_header():
    assert format_table(("a", "bb"), []) == ["a  bb"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (2.5e-7, "250 ns"), (1.234e-4, "123 us"), (0.01234, "12.3 ms"),
     (0.1234, "123 ms"), (1.5, "1.5 s"), (250.0, "250 s")],
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, "n/a"), (512, "512 B"), (2048, "2.0 KiB"), (3 * 2**20, "3.0 MiB"),
     (5 * 2**30, "5.0 GiB")],
)
def test_format_bytes(size, text):
    assert format_bytes(size) == text
