"""The command line's values (sizes, modes, ids) as upstream famfs takes them, parsed without
argparse: `famfs_py.cli.common` makes argparse types of them, and a plain form of a command
(famfs_py.cli.creat_plain) uses them as they are. Each raises ValueError saying what is
wrong."""

from __future__ import annotations

_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size(text: str) -> int:
    """Decimal or 0x..., with k/m/g/t (1024-based) suffixes."""
    value = text.strip().lower()
    multiplier = 1
    if value and value[-1] in _SUFFIXES:  # never a hex digit, so 0x2m is 2 MiB
        multiplier = _SUFFIXES[value[-1]]
        value = value[:-1]
    try:
        number = int(value, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a size (e.g. 4096, 2m, 0x200000)") from None
    if number < 0:
        raise ValueError(f"{text!r}: a size cannot be negative")
    return number * multiplier


def mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise ValueError(f"{text!r} is not an octal mode (e.g. 0644)") from None
    if not 0 <= value <= 0o7777:
        raise ValueError(f"{text!r} is not a file mode (0000..7777)")
    return value


def numeric_id(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise ValueError(f"{text!r} is not a numeric id") from None
    if not 0 <= value < 1 << 32:
        raise ValueError(f"{text!r} is out of range for an id")
    return value
