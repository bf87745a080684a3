"""Every error class syncd raises on purpose, and the one ``outcome(exc)``.

Each layer raises the class that says what went wrong, with a message that
names the file, key, commit or URL; only ``outcome`` decides what a failure
means for the caller (README, "Exit codes"): the exit code, the stable reason (in
``health.json``, logs and metrics), the log event, and whether ``syncd run``
retries soon.  The cli, ``sync --log``, ``run`` and ``status`` all ask it.

Exit codes: 1 refused (nothing changed; only a new commit can fix it),
2 usage, config, or any condition retrying cannot fix (the hint says what to
do), 3 transient (retry later), 130 interrupted.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_TRANSIENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""

    exit_code = EXIT_REFUSED
    reason = "error"

    def __init__(self, message: str, reason: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if reason is not None:
            self.reason = reason


# --- exit 2: retrying cannot fix it ---------------------------------------------------


class UsageError(SyncdError):
    """Bad arguments, a missing directory, an unreadable file: exit 2."""

    exit_code = EXIT_USAGE
    reason = "usage"


class ConfigError(UsageError):
    """The node's config (or a file it names) is wrong: exit 2, naming the key."""

    reason = "config"


class AllowedSignersError(ConfigError):
    """A malformed allowed_signers file (the trust root): exit 2."""


class StateError(UsageError):
    """``state.json`` cannot be read: exit 2 (never discard it: it holds the
    rollback anchor)."""

    reason = "state"


class FatalIOError(UsageError):
    """A file-system condition retrying cannot fix (no permission, a
    read-only file system, a corrupt node key): exit 2 with a hint."""

    reason = "io-error"


# --- exit 1: refused, nothing changed -------------------------------------------------


class RefusedError(SyncdError):
    """The new state is not acceptable (signature, rollback, content): exit 1.
    Nothing on disk was changed."""

    exit_code = EXIT_REFUSED
    reason = "refused"


class SignatureError(RefusedError):
    """A signature that does not verify, or a key or format syncd refuses."""

    reason = "signature"


class UnsafeTreeError(RefusedError):
    """The signed tree cannot be read safely (too many entries, not a tree)."""

    reason = "unsafe-tree"


# --- exit 3: transient, retry later ---------------------------------------------------


class TransientError(SyncdError):
    """Worth retrying later (no URL reachable, lock busy, reload failed): exit 3."""

    exit_code = EXIT_TRANSIENT
    reason = "transient"


class FetchError(TransientError):
    """No URL could be fetched (each URL's failure is in the message)."""

    reason = "fetch-failed"


class FetchTimeoutError(FetchError):
    """A URL did not finish its fetch within ``repo.timeout``."""

    reason = "fetch-timeout"


class FetchTooLargeError(FetchError):
    """A URL sent more than ``repo.max_fetch_bytes``."""

    reason = "fetch-too-large"


class NoBranchError(FetchError):
    """One URL has no such branch.  When no URL has it, the fetch raises a
    ``ConfigError`` instead: retrying will not create the branch."""


class NotARepositoryError(FetchError):
    """A local URL (a path, ``file://``) that is no git repository.  When no
    URL can be fetched for this reason (or a missing branch), the fetch
    raises a ``ConfigError``: a typo does not heal by retrying."""


class IncompleteError(FetchError):
    """What a URL sent does not reach every object its commits need."""


class StoreRepairedError(TransientError):
    """The local store was corrupt or missing objects; it was set aside and
    the next pass fetches a fresh one (the rollback anchor is kept)."""

    reason = "store-repaired"


class ReloadError(TransientError):
    """tincd did not take the new files: they stay installed, the reload stays
    pending, the next pass retries."""

    reason = "reload-failed"


# --- the one mapping --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    exit_code: int
    reason: str
    event: str  # the log event of the failed pass
    retry: bool  # ``run`` retries soon (back-off) rather than at the next interval
    message: str
    hint: str | None = None
    level: str = "error"  # the log level of the event: "critical" for a bug in syncd

    def line(self) -> str:
        """What a user reads: the message, then what to do on a second line."""
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


def outcome(exc: BaseException) -> Outcome:
    """What a failure means: exit code, reason, log event, retry."""
    if isinstance(exc, KeyboardInterrupt):
        return Outcome(EXIT_INTERRUPTED, "interrupted", "sync.interrupted", False, "interrupted", level="warning")
    if isinstance(exc, SyncdError):
        code = exc.exit_code
        return Outcome(code, exc.reason, _event(exc.reason, code), code == EXIT_TRANSIENT, exc.message, exc.hint)
    if isinstance(exc, OSError):
        return _os_outcome(exc)
    # A bug, or a library raising what it does not document: never a verdict
    # on the input (exit 1), and worth retrying, since it may not recur.
    return Outcome(
        EXIT_TRANSIENT,
        "internal-error",
        "sync.failed",
        True,
        f"internal error: {type(exc).__name__}: {exc}",
        "this is a bug in syncd: please report it with this message (`SYNCD_DEBUG=1 syncd sync` shows the traceback)",
        level="critical",
    )


def _event(reason: str, code: int) -> str:
    if reason == "reload-failed":
        return "reload.failed"
    return "sync.refused" if code == EXIT_REFUSED else "sync.failed"


def _os_outcome(exc: OSError) -> Outcome:
    """An ``OSError`` no layer wrapped: name its path, and tell a condition
    retrying cannot fix (exit 2, with what to change) from one that may pass
    (exit 3: a full disk, an I/O error)."""
    if exc.filename is None:
        return Outcome(EXIT_TRANSIENT, "io-error", "sync.failed", True, str(exc))
    path = _path_name(exc.filename)
    where = path if exc.filename2 is None else f"{path} -> {_path_name(exc.filename2)}"
    message = f"{where}: {exc.strerror or exc}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        message = f"{where}: permission denied to {user_name()}"
    hint = _os_hint(exc.errno, path)
    if hint is None:
        return Outcome(EXIT_TRANSIENT, "io-error", "sync.failed", True, message)
    return Outcome(EXIT_USAGE, "io-error", "sync.failed", False, message, hint)


def user_name() -> str:
    """``user alice (uid 1000)``: who was refused, for permission messages."""
    uid = os.geteuid()
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _path_name(name: object) -> str:
    return os.fsdecode(name) if isinstance(name, bytes) else str(name)


def _os_hint(code: int | None, path: str) -> str | None:
    # A file that does not exist yet was being created (a temporary file
    # beside a host file, the lock, state.json): the directory is what
    # refused, and what the admin has to change.
    target = path if os.path.lexists(path) else str(Path(path).parent)
    if code in (errno.EACCES, errno.EPERM):
        if os.geteuid() != 0:
            return (
                f"run syncd as root (sudo), as its units do, or give {user_name()} read and write permission "
                f"on {target}"
            )
        return (
            f"give {user_name()}, who runs syncd, read and write permission on {target} "
            "(syncd@.service runs it as root without CAP_DAC_OVERRIDE: there the owner and mode of "
            f"{target} decide)"
        )
    if code == errno.EROFS:
        return (
            f"{target} is on a read-only file system: remount it read-write, or under systemd "
            "list it in ReadWritePaths= of the unit (contrib/systemd/syncd@.service)"
        )
    if code in (errno.ENOTDIR, errno.EISDIR, errno.ELOOP):
        return f"{path} is not the plain file or directory syncd expects (a symlink?): replace it or fix the config"
    return None
