"""Measured figures that tests report (printed in pytest's summary)."""

from __future__ import annotations

FIGURES: dict[str, str] = {}


def record(name: str, value: str) -> None:
    FIGURES[name] = value
