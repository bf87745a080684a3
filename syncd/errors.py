"""One error root; ``cli`` maps each kind to a message and an exit code.

``reason`` is a stable word for logs and metrics; ``exit_code`` follows
DESIGN.md §3: 1 refused, 2 usage or config, 3 transient.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""

    exit_code = 1
    reason = "error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class UsageError(SyncdError):
    """Bad arguments, a missing directory, an unreadable file: exit 2."""

    exit_code = 2
    reason = "usage"


class RefusedError(SyncdError):
    """The new state is not acceptable (signature, rollback, content): exit 1.
    Nothing on disk was changed."""

    exit_code = 1
    reason = "refused"


class TransientError(SyncdError):
    """Worth retrying later (no URL reachable, lock busy, reload failed): exit 3."""

    exit_code = 3
    reason = "transient"
