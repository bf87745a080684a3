"""Findings: what the checker says about a file, with a stable code and a line.

Codes are a contract (README, "syncd check"): add codes, never rename one.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Location(NamedTuple):
    path: str
    line: int


class Finding(NamedTuple):
    """One problem.  ``line`` is 1-based; whole-file findings use line 1."""

    path: str
    line: int
    severity: Severity
    code: str
    message: str
    related: tuple[Location, ...] = ()

    def sort_key(self) -> tuple[str, int, str, str]:
        return (self.path, self.line, self.code, self.message)

    def format_text(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}[{self.code}]: {self.message}"


def error(path: str, line: int, code: str, message: str, related: tuple[Location, ...] = ()) -> Finding:
    return Finding(path, line, Severity.ERROR, code, message, related)


def warning(path: str, line: int, code: str, message: str, related: tuple[Location, ...] = ()) -> Finding:
    return Finding(path, line, Severity.WARNING, code, message, related)


def plural(count: int, word: str) -> str:
    """``plural(1, "error")`` → "1 error"; any other count takes an s."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
