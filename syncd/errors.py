"""One error root; ``cli`` maps each kind to a message and an exit code."""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd raises on purpose.  ``reason`` is stable."""

    exit_code = 1
    reason = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(SyncdError):
    """Bad arguments, a missing directory, an unreadable file: exit 2."""

    exit_code = 2
    reason = "usage"
