from __future__ import annotations

import pytest

from vmreclaim.errors import UsageError
from vmreclaim.units import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", 3 << 29),
        ("300MB", 300 << 20),
        ("64k", 64 << 10),
        (" 1T ", 1 << 40),
    ],
)
def test_sizes_are_binary(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "12Q", "-1G", "G", "1.2.3M", "ten"])
def test_bad_sizes_say_what_to_write(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_size(text)
    assert caught.value.hint is not None
    assert "512M" in caught.value.hint


def test_format_size_picks_a_readable_unit() -> None:
    assert format_size(300) == "300 B"
    assert format_size(1536 << 20) == "1.5 GiB"
    assert format_size(-(2 << 10)) == "-2.0 KiB"
