"""``errors.outcome``: the one mapping from a failure to its exit code,
reason, log event, log level and retry (README: exit codes and reasons)."""

from __future__ import annotations

import errno
import getpass
import os
import re
from pathlib import Path

import pytest

from syncd import errors
from syncd.errors import outcome
from syncd.tinc import keys

# class → (exit code, reason, event, retry)
CLASSES: list[tuple[type[errors.SyncdError], int, str, str, bool]] = [
    (errors.SyncdError, 1, "refused", "sync.refused", False),
    (errors.UsageError, 2, "usage", "sync.failed", False),
    (errors.ConfigError, 2, "config", "sync.failed", False),
    (errors.AllowedSignersError, 2, "config", "sync.failed", False),
    (errors.StateError, 2, "state", "sync.failed", False),
    (errors.FatalIOError, 2, "io-error", "sync.failed", False),
    (errors.RefusedError, 1, "refused", "sync.refused", False),
    (errors.SignatureError, 1, "signature", "sync.refused", False),
    (errors.UnsafeTreeError, 1, "unsafe-tree", "sync.refused", False),
    (errors.TransientError, 3, "transient", "sync.failed", True),
    (errors.FetchError, 3, "fetch-failed", "sync.failed", True),
    (errors.FetchTimeoutError, 3, "fetch-timeout", "sync.failed", True),
    (errors.FetchTooLargeError, 3, "fetch-too-large", "sync.failed", True),
    (errors.NoBranchError, 3, "fetch-failed", "sync.failed", True),
    (errors.NotARepositoryError, 3, "fetch-failed", "sync.failed", True),  # one URL; none: ConfigError
    (errors.IncompleteError, 3, "fetch-failed", "sync.failed", True),
    (errors.StoreRepairedError, 3, "store-repaired", "sync.failed", True),
    (errors.ReloadError, 3, "reload-failed", "reload.failed", True),
]


@pytest.mark.parametrize(("cls", "code", "reason", "event", "retry"), CLASSES, ids=[c[0].__name__ for c in CLASSES])
def test_every_error_class(cls: type[errors.SyncdError], code: int, reason: str, event: str, retry: bool) -> None:
    got = outcome(cls("what went wrong, naming the file"))
    assert (got.exit_code, got.reason, got.event, got.retry, got.level) == (code, reason, event, retry, "error")
    assert got.message == "what went wrong, naming the file" and got.hint is None
    assert got.line() == "what went wrong, naming the file"


def test_every_error_class_is_in_the_table() -> None:
    classes = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.SyncdError)}
    assert classes == {row[0] for row in CLASSES}


def test_a_reason_and_a_hint_given_at_the_raise_are_kept() -> None:
    got = outcome(
        errors.RefusedError("commit abc: rewound", reason=errors.Reason.NON_FAST_FORWARD, hint="run --allow-rewind")
    )
    assert (got.exit_code, got.reason, got.event, got.retry) == (1, "non-fast-forward", "sync.refused", False)
    assert got.line() == "commit abc: rewound\n  hint: run --allow-rewind"
    locked = outcome(errors.TransientError("another syncd holds /x/lock", reason=errors.Reason.LOCKED))
    assert (locked.exit_code, locked.reason, locked.retry) == (3, "locked", True)


# errno → exit code: an exit 2 has a hint and waits the interval; an exit 3 is retried soon.
ERRNOS = {
    "EACCES": 2,
    "EPERM": 2,
    "EROFS": 2,
    "ENOTDIR": 2,
    "EISDIR": 2,
    "ELOOP": 2,
    "ENOSPC": 3,
    "EIO": 3,
    "ENOENT": 3,
}


@pytest.mark.parametrize(
    ("code", "exit_code", "retry"),
    [pytest.param(getattr(errno, name), code, code == 3, id=name) for name, code in ERRNOS.items()],
)
def test_os_errors(code: int, exit_code: int, retry: bool, tmp_path: Path) -> None:
    path = tmp_path / "hosts" / "gateway"
    got = outcome(OSError(code, os.strerror(code), str(path)))
    assert (got.exit_code, got.reason, got.event, got.retry) == (exit_code, "io-error", "sync.failed", retry)
    if code in (errno.EACCES, errno.EPERM):  # who was refused, by name and uid
        assert got.message == f"{path}: permission denied to user {getpass.getuser()} (uid {os.geteuid()})"
    else:
        assert got.message == f"{path}: {os.strerror(code)}"
    assert "[Errno" not in got.line()
    assert (got.hint is None) == retry


def test_no_permission_names_the_directory_a_file_was_to_be_created_in(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.mkdir()
    temp = hosts / ".syncd-gateway.1234abcd"
    got = outcome(PermissionError(errno.EACCES, "Permission denied", str(temp)))
    assert got.message.startswith(f"{temp}: permission denied to user ")
    assert got.hint is not None
    assert f"read and write permission on {hosts}" in got.hint and str(temp) not in got.hint
    existing = hosts / "gateway"
    existing.write_text("")
    got = outcome(PermissionError(errno.EACCES, "Permission denied", str(existing)))
    assert got.hint is not None and f"permission on {existing}" in got.hint
    rofs = outcome(OSError(errno.EROFS, "Read-only file system", str(temp)))
    assert rofs.hint is not None and rofs.hint.startswith(f"{hosts} is on a read-only file system")
    assert "ReadWritePaths=" in rofs.hint


def test_an_os_error_with_two_paths_or_none() -> None:
    got = outcome(OSError(errno.EXDEV, "Invalid cross-device link", "/a/x", None, "/b/y"))
    assert (got.exit_code, got.message) == (3, "/a/x -> /b/y: Invalid cross-device link")
    got = outcome(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))
    assert (got.exit_code, got.reason, got.retry) == (3, "io-error", True)
    assert "Connection reset by peer" in got.message


def test_keyboard_interrupt() -> None:
    got = outcome(KeyboardInterrupt())
    assert (got.exit_code, got.reason, got.retry, got.line()) == (130, "interrupted", False, "interrupted")


@pytest.mark.parametrize("exc", [ValueError("dulwich surprise"), keys.KeyFormatError("bad key"), KeyError("k")])
def test_anything_else_is_an_internal_error_logged_at_critical_and_retried(exc: Exception) -> None:
    got = outcome(exc)
    assert (got.exit_code, got.reason, got.event, got.retry, got.level) == (
        3,
        "internal-error",
        "sync.failed",
        True,
        "critical",
    )
    assert got.message == f"internal error: {type(exc).__name__}: {exc}"
    assert got.hint is not None and "SYNCD_DEBUG=1" in got.hint


def test_the_reasons_are_those_docs_architecture_lists() -> None:
    """Every member of ``Reason`` is in the page's table of reasons, and the
    table names no other: a reason is a contract, written down."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    table = page.split("## Reasons", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            listed.update(re.findall(r"`([a-z-]+)`", row.split("|")[1]))
    assert listed == {str(reason) for reason in errors.Reason}
