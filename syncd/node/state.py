"""syncd's own state in ``state_dir``: ``state.json`` (the last applied
commit, the rollback anchor, and the manifest of installed files),
``health.json`` (how the passes went) and the locks.

``state_dir`` is private (0700, whatever the umask): the rollback anchor
lives there.  ``state.json`` is written last in a pass, atomically, after
the host files: see ``hostsdir.py`` for the crash points.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from syncd.errors import Reason, StateError, TransientError
from syncd.node.files import fsync_dir, make_dirs, write_atomic
from syncd.node.hostsdir import FileStat

STATE_FILE = "state.json"
HEALTH_FILE = "health.json"
LOG_FILE = "log.jsonl"  # the audit trail: one JSON object per applied commit
LOCK_FILE = "lock"  # the network's lock: state, health, the hosts directory, the applied ref
FETCH_LOCK_FILE = "fetch.lock"  # one fetch at a time: quarantines and the fetched ref
STORE_DIR = "repo.git"
PRIVATE_MODE = 0o700  # state_dir and the store: the rollback anchor lives there
PRIVATE_FILE_MODE = 0o600  # lock, state.json, health.json
# 2: the manifest names a file's content by its git blob id (1: by sha256;
# such entries are read once again and recorded by blob id, never rewritten).
STATE_VERSION = 2
_STATE_HINT = (
    "state.json holds the last applied commit, the rollback anchor: restore it from a backup or repair the "
    "JSON; do not delete it (a node without it would accept any signed history)"
)


@dataclass(frozen=True, slots=True)
class State:
    """What a node remembers between runs (``state_dir/state.json``)."""

    last_applied: str | None = None
    signer: str | None = None
    commit_time: int | None = None
    applied_at: float | None = None
    manifest: Mapping[str, FileStat] = field(default_factory=dict)
    last_reload: float | None = None
    reload_pending: bool = False  # files changed but tincd has not taken them yet
    reloads: int = 0
    held_back: str | None = None  # why the repository's own host file was not installed (own-key-mismatch)
    admins_until: int | None = None  # when the last admin key valid at the applied commit expires (None: never)
    max_blob_bytes: int | None = None  # the applied commit's policy: the largest blob a commit may carry

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"version": STATE_VERSION}
        for name in self.__slots__:
            if name != "manifest":
                data[name] = getattr(self, name)
        # each file as [blob, size, mtime_ns, ctime_ns, ino], and the learned
        # key when there is one: compact for 100k nodes (json writes a tuple
        # as an array; a call and a list per file were most of a save)
        data["manifest"] = {name: f if f.learned else f[:5] for name, f in sorted(self.manifest.items())}
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """One line of the audit log (``syncd log``): a commit this node applied."""

    commit: str
    committed_at: int
    applied_at: float
    signer: str | None
    key: str | None
    role: str | None
    files: tuple[str, ...]
    summary: str = ""


@dataclass(frozen=True, slots=True)
class Health:
    """How the passes went (``state_dir/health.json``), for ``status`` and
    metrics.  Kept apart from the state so that a refused pass leaves the
    state file itself byte-for-byte as it was."""

    last_pass_at: float | None = None
    last_pass_duration: float | None = None  # seconds, from the pass's start to its outcome
    last_outcome: str | None = None  # applied, unchanged, refused, config, transient, ...
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    last_error_at: float | None = None
    failures: int = 0  # consecutive failed passes
    last_trigger: str | None = None  # what started the last pass: start, poll, retry, signal, drift, notify
    last_trigger_by: str | None = None  # notify: who the notification says it is from (a node, hook, webhook)
    last_notification_at: float | None = None  # when the agent last heard a notification (any)
    last_notification_by: str | None = None
    # each URL of repo.url + repo.mirrors in the last pass that fetched:
    # {"url", "tip", "state" (current, behind, ahead, forked, failing), "detail"}
    urls: list[dict[str, str | None]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class Trigger:
    """What started a pass of ``syncd run``, and the last notification heard."""

    kind: str
    by: str | None = None
    heard_at: float | None = None
    heard_by: str | None = None
    origin: str | None = None  # notify by an agent: the origin of its fan-out (not recorded)

    def recorded(self, health: Health) -> Health:
        """``health`` with this trigger and the last notification heard."""
        return dataclasses.replace(
            health,
            last_trigger=self.kind,
            last_trigger_by=self.by,
            last_notification_at=self.heard_at,
            last_notification_by=self.heard_by,
        )


def load_health(state_dir: Path) -> Health:
    try:
        raw = json.loads((state_dir / HEALTH_FILE).read_text())
        return Health(**{k: v for k, v in raw.items() if k in Health.__slots__})
    except (OSError, ValueError, TypeError):
        return Health()


def save_health(state_dir: Path, health: Health) -> None:
    ensure_state_dir(state_dir)
    write_atomic(state_dir / HEALTH_FILE, (json.dumps(health.to_json()) + "\n").encode(), PRIVATE_FILE_MODE)


_last_loaded: dict[Path, tuple[bytes, State]] = {}  # per state file: its bytes and the State they parse to


def load_state(state_dir: Path) -> State:
    """The state in ``state_dir`` (``State()`` when there is none yet).  A
    long-running agent reads the same bytes pass after pass: they are parsed
    again only when they differ from the last ones read (a 10k-node manifest
    is most of a no-op pass)."""
    path = state_dir / STATE_FILE
    try:
        data = path.read_bytes()
        last = _last_loaded.get(path)
        if last is not None and last[0] == data:
            return last[1]
        raw = json.loads(data)
    except FileNotFoundError:
        return State()
    except PermissionError:
        raise  # errors.outcome names the path and the user: the file itself is fine
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable state ({exc})", hint=_STATE_HINT) from None
    state = _parse_state(path, raw)
    _last_loaded.clear()  # one state file kept: a node syncs one network per process
    _last_loaded[path] = (data, state)
    return state


def _parse_state(path: Path, raw: object) -> State:
    if not isinstance(raw, dict):
        raise StateError(f"{path}: malformed state (not a JSON object)", hint=_STATE_HINT)
    try:
        manifest = _manifest(raw.get("manifest", {}))
        if raw.get("version", 1) < STATE_VERSION:  # sha256 digests: unknown ids, so each file is read again
            manifest = {n: f._replace(blob="", ino=-1) for n, f in manifest.items()}
        fields = {k: v for k, v in raw.items() if k in State.__slots__ and k != "manifest"}
        return State(manifest=manifest, **fields)
    except (TypeError, AttributeError) as exc:
        raise StateError(f"{path}: malformed state ({exc})", hint=_STATE_HINT) from None


def _manifest(raw: Mapping[str, list[object]]) -> dict[str, FileStat]:
    """The manifest's entries (``State.to_json``), as ``FileStat(*entry)``
    builds them: five fields, or six with the learned key.  Built as tuples
    directly, which costs half as much at 10k entries (a no-op pass reads
    them all); any other length is the ``TypeError`` the constructor raises."""
    manifest: dict[str, FileStat] = {}
    new = tuple.__new__
    for name, entry in raw.items():
        size = len(entry)
        if size == 5:
            manifest[str(name)] = new(FileStat, (*entry, ""))
        elif size == 6:
            manifest[str(name)] = new(FileStat, entry)
        else:
            raise TypeError(f"manifest entry {name!r} has {size} fields, not 5 or 6")
    return manifest


def save_state(state_dir: Path, state: State) -> None:
    ensure_state_dir(state_dir)
    data = (json.dumps(state.to_json(), separators=(",", ":")) + "\n").encode()
    write_atomic(state_dir / STATE_FILE, data, PRIVATE_FILE_MODE)
    fsync_dir(state_dir)


def ensure_state_dir(state_dir: Path) -> None:
    """``state_dir`` exists and is 0700: it holds the rollback anchor and the
    store, which no other user may read or change.  A state dir with any
    other mode (an old one with group or other access) is tightened."""
    make_dirs(state_dir.parent)
    _private_dir(state_dir)


def _private_dir(path: Path) -> None:
    with contextlib.suppress(FileExistsError):
        path.mkdir(0)
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_MODE:
        path.chmod(PRIVATE_MODE)


@contextlib.contextmanager
def locked(state_dir: Path, timeout: float, name: str = LOCK_FILE) -> Iterator[None]:
    """One sync at a time per network: an exclusive flock on state_dir/lock
    (or on another lock file of the state directory: ``fetch.lock``).

    It also makes the state dir and the store directory private (0700) before
    anything is written into them: git's own initialisation follows the umask."""
    ensure_state_dir(state_dir)
    _private_dir(state_dir / STORE_DIR)
    fd = os.open(state_dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"another syncd holds {state_dir / name} (waited {timeout:.0f} s)", reason=Reason.LOCKED
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


class StateDir:
    """``state.json`` and the audit log as a pass sees them (the
    ``sync.ports.StateFile`` port)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def load(self) -> State:
        return load_state(self.state_dir)

    def save(self, state: State) -> None:
        save_state(self.state_dir, state)

    def log(self, entries: list[Applied]) -> None:
        append_log(self.state_dir, entries)


def append_log(state_dir: Path, entries: list[Applied]) -> None:
    """Append to the audit log, durably, before the state that records the
    commits is saved: a crash between the two leaves a line the next pass
    writes again (``read_log`` drops such repeats)."""
    if not entries:
        return
    lines = b"".join(json.dumps(dataclasses.asdict(e), separators=(",", ":")).encode() + b"\n" for e in entries)
    fd = os.open(state_dir / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        os.write(fd, lines)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_log(state_dir: Path) -> list[Applied]:
    """The audit log, newest first, each commit once (its last record)."""
    try:
        raw = (state_dir / LOG_FILE).read_bytes()
    except FileNotFoundError:
        return []
    seen: set[str] = set()
    entries: list[Applied] = []
    for line in reversed(raw.splitlines()):
        try:
            data = json.loads(line)
            entry = Applied(**{**data, "files": tuple(data.get("files", ()))})
        except (ValueError, TypeError):
            continue  # a line cut short by a crash
        if entry.commit not in seen:
            seen.add(entry.commit)
            entries.append(entry)
    return entries
