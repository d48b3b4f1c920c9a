"""Sizes and rates as people write them: "10MB", "64KiB", "5MB/s", "40mbit"."""

from typing import Union

_SIZES = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}
_BITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}


def _split(text: str):
    text = text.strip()
    i = 0
    while i < len(text) and (text[i].isdigit() or text[i] == "."):
        i += 1
    return text[:i], text[i:].strip()


def parse_bytes(value: Union[int, float, str]) -> int:
    """A size in bytes: 1500, "64KB", "10MB" (powers of 1,000), "1MiB" (of 1,024)."""
    if isinstance(value, (int, float)):
        return int(value)
    number, unit = _split(value)
    factor = _SIZES.get(unit.lower())
    if not number or factor is None:
        raise ValueError(f'{value!r} is not a size: write 1500, "64KB", "10MB" or "1MiB"')
    return int(round(float(number) * factor))


def parse_rate_bytes(value: Union[int, float, str]) -> int:
    """A rate in bytes per second: 625000, "5MB/s", or in bits as links are ("40mbit")."""
    if isinstance(value, (int, float)):
        return int(value)
    if value.endswith("/s"):
        return parse_bytes(value[:-2])
    number, unit = _split(value)
    factor = _BITS.get(unit.lower())
    if not number or factor is None:
        raise ValueError(f'{value!r} is not a rate: write "5MB/s" (bytes) or "40mbit" (bits)')
    return int(round(float(number) * factor / 8))
