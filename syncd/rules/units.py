"""Durations and sizes as an operator writes them in the node config.

Durations are seconds or a number with ``s``, ``m``, ``h``, ``d`` (``90``,
``10m``, ``14d``); sizes are bytes or a number with ``KiB``, ``MiB``,
``GiB`` (binary units only: ``MB`` would be ambiguous, so it is an error).
Both raise ``ValueError`` with the reason; the caller names the key.
"""

from __future__ import annotations

import math
import re

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)\Z")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?\Z")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90"``, ``"10m"``, ``"1.5h"``, ``"14d"``."""
    if isinstance(value, bool):
        raise ValueError("must be a duration (seconds, or a number with s, m, h, d), not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value.strip())):
        seconds = float(m[1]) * _DURATION_UNITS[m[2]]
    else:
        raise ValueError(f"{value!r} is not a duration (seconds, or a number with s, m, h, d: 90, 10m, 14d)")
    if not seconds > 0 or math.isnan(seconds):
        raise ValueError(f"{value!r} must be more than zero")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"64KiB"``, ``"256MiB"``, ``"1GiB"``."""
    if isinstance(value, bool):
        raise ValueError("must be a size (bytes, or a number with KiB, MiB, GiB), not a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value.strip())):
        size = int(float(m[1]) * _SIZE_UNITS[m[2]])
    else:
        raise ValueError(f"{value!r} is not a size (bytes, or a number with KiB, MiB, GiB: 65536, 256MiB)")
    if size <= 0:
        raise ValueError(f"{value!r} must be more than zero")
    return size


def format_duration(seconds: float) -> str:
    """``1209600`` → ``14d``; ``5400`` → ``1h30m``; whole seconds at most."""
    if seconds < 60:
        return f"{seconds:g}s"
    rest, parts = round(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts[:2])


def format_size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size} bytes"
