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

import enum
import errno
import os
from dataclasses import dataclass
from pathlib import Path

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_TRANSIENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Reason(enum.StrEnum):
    """The stable reason of a failed pass, in ``health.json``, the logs and
    the metrics (docs/architecture.md, "Reasons"): add members, never
    rename one."""

    # exit 1: refused, nothing changed; only a new signed commit fixes it
    REFUSED = "refused"  # any other refusal (add-node's: a tinc directory already set up, no free subnet)
    SIGNATURE = "signature"
    UNAUTHORIZED = "unauthorized"
    NON_FAST_FORWARD = "non-fast-forward"
    BACKDATED = "backdated"
    FUTURE_DATED = "future-dated"
    INVALID_CONTENT = "invalid-content"
    UNSAFE_TREE = "unsafe-tree"
    OWN_KEY_MISMATCH = "own-key-mismatch"  # the node's own host file held back, the rest applied
    # exit 2: retrying cannot fix it
    USAGE = "usage"
    CONFIG = "config"
    STATE = "state"
    IO_ERROR = "io-error"  # also exit 3, when it may pass (a full disk)
    # exit 3: transient, retried
    TRANSIENT = "transient"
    FETCH_FAILED = "fetch-failed"
    FETCH_TIMEOUT = "fetch-timeout"
    FETCH_TOO_LARGE = "fetch-too-large"
    STORE_REPAIRED = "store-repaired"
    RELOAD_FAILED = "reload-failed"
    LOCKED = "locked"
    INTERNAL_ERROR = "internal-error"
    # exit 130
    INTERRUPTED = "interrupted"
    # not a pass's: ``syncd status`` says so of an applied commit older than trust.max_age
    STALE = "stale"


# The reasons of a refused pass (exit 1: only a new signed commit fixes
# them); any other recorded outcome but success is a failed pass.
REFUSALS = frozenset(
    {
        Reason.REFUSED,
        Reason.SIGNATURE,
        Reason.UNAUTHORIZED,
        Reason.NON_FAST_FORWARD,
        Reason.BACKDATED,
        Reason.FUTURE_DATED,
        Reason.INVALID_CONTENT,
        Reason.UNSAFE_TREE,
        Reason.OWN_KEY_MISMATCH,
    }
)


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""

    exit_code = EXIT_REFUSED
    reason = Reason.REFUSED

    def __init__(self, message: str, reason: Reason | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if reason is not None:
            self.reason = reason


# --- exit 2: retrying cannot fix it ---------------------------------------------------


class UsageError(SyncdError):
    """Bad arguments, a missing directory, an unreadable file: exit 2."""

    exit_code = EXIT_USAGE
    reason = Reason.USAGE


class ConfigError(UsageError):
    """The node's config (or a file it names) is wrong: exit 2, naming the key."""

    reason = Reason.CONFIG


class AllowedSignersError(ConfigError):
    """A malformed allowed_signers file (the trust root): exit 2."""


class StateError(UsageError):
    """``state.json`` cannot be read: exit 2 (never discard it: it holds the
    rollback anchor)."""

    reason = Reason.STATE


class FatalIOError(UsageError):
    """A file-system condition retrying cannot fix (no permission, a
    read-only file system, a corrupt node key): exit 2 with a hint."""

    reason = Reason.IO_ERROR


# --- exit 1: refused, nothing changed -------------------------------------------------


class RefusedError(SyncdError):
    """The new state is not acceptable (signature, rollback, content): exit 1.
    Nothing on disk was changed."""

    exit_code = EXIT_REFUSED
    reason = Reason.REFUSED


class SignatureError(RefusedError):
    """A signature that does not verify, or a key or format syncd refuses."""

    reason = Reason.SIGNATURE


class UnsafeTreeError(RefusedError):
    """The signed tree cannot be read safely (too many entries, not a tree)."""

    reason = Reason.UNSAFE_TREE


# --- exit 3: transient, retry later ---------------------------------------------------


class TransientError(SyncdError):
    """Worth retrying later (no URL reachable, lock busy, reload failed): exit 3."""

    exit_code = EXIT_TRANSIENT
    reason = Reason.TRANSIENT


class FetchError(TransientError):
    """No URL could be fetched (each URL's failure is in the message)."""

    reason = Reason.FETCH_FAILED


class FetchTimeoutError(FetchError):
    """A URL did not finish its fetch within ``repo.timeout``."""

    reason = Reason.FETCH_TIMEOUT


class FetchTooLargeError(FetchError):
    """A URL sent more than ``repo.max_fetch_bytes``."""

    reason = Reason.FETCH_TOO_LARGE


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

    reason = Reason.STORE_REPAIRED


class ReloadError(TransientError):
    """tincd did not take the new files: they stay installed, the reload stays
    pending, the next pass retries."""

    reason = Reason.RELOAD_FAILED


# --- the one mapping --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    exit_code: int
    reason: Reason
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
        return Outcome(EXIT_INTERRUPTED, Reason.INTERRUPTED, "sync.interrupted", False, "interrupted", level="warning")
    if isinstance(exc, SyncdError):
        code = exc.exit_code
        return Outcome(code, exc.reason, _event(exc.reason, code), code == EXIT_TRANSIENT, exc.message, exc.hint)
    if isinstance(exc, OSError):
        return _os_outcome(exc)
    # A bug, or a library raising what it does not document: never a verdict
    # on the input (exit 1), and worth retrying, since it may not recur.
    return Outcome(
        EXIT_TRANSIENT,
        Reason.INTERNAL_ERROR,
        "sync.failed",
        True,
        f"internal error: {type(exc).__name__}: {exc}",
        "this is a bug in syncd: please report it with this message (`SYNCD_DEBUG=1 syncd sync` shows the traceback)",
        level="critical",
    )


def _event(reason: Reason, code: int) -> str:
    if reason is Reason.RELOAD_FAILED:
        return "reload.failed"
    return "sync.refused" if code == EXIT_REFUSED else "sync.failed"


def _os_outcome(exc: OSError) -> Outcome:
    """An ``OSError`` no layer wrapped: name its path, and tell a condition
    retrying cannot fix (exit 2, with what to change) from one that may pass
    (exit 3: a full disk, an I/O error)."""
    if exc.filename is None:
        return Outcome(EXIT_TRANSIENT, Reason.IO_ERROR, "sync.failed", True, str(exc))
    path = _path_name(exc.filename)
    where = path if exc.filename2 is None else f"{path} -> {_path_name(exc.filename2)}"
    message = f"{where}: {exc.strerror or exc}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        message = f"{where}: permission denied to {user_name()}"
    hint = _os_hint(exc.errno, path)
    if hint is None:
        return Outcome(EXIT_TRANSIENT, Reason.IO_ERROR, "sync.failed", True, message)
    return Outcome(EXIT_USAGE, Reason.IO_ERROR, "sync.failed", False, message, hint)


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
