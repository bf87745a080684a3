"""Carry out a ``Plan`` in ``tinc.dir/hosts`` and keep syncd's state.

Crash safety, point by point (the next run must converge whatever happens):

* Each write goes to ``.syncd-NAME.XXXX`` in the hosts directory, is
  fsync'd, then renamed over ``NAME``: a reader (tincd) sees the old file or
  the new one, never half of one.  Leftover temp files from a crash are
  removed at the start of the next apply; tincd ignores them meanwhile
  (a leading dot is not a valid node name).
* The directory is fsync'd after the renames and removals, and the state
  file (manifest and last applied commit) is written last, the same way.
  If the run dies before that, the next run finds files whose stat no longer
  matches the old manifest, hashes them, sees they already equal the repo,
  and only records them: no rewrite, so no mtime change for tincd.
* Only files whose bytes differ are written; unchanged ones keep their inode
  and mtime (tincd 1.0 drops the connection of a peer whose host file has a
  newer mtime at reload).
* A directory syncd creates is made with mode 0 and then chmod'ed: a crash
  between the two leaves a mode-0 directory, which the next run recognises
  as its own unfinished work and finishes.

What is read, and what is replaced (DESIGN.md §6b):

* Only regular files are read in the hosts directory.  Each is opened with
  ``O_NOFOLLOW|O_NONBLOCK`` (a symlink is never followed out of the
  directory, opening a FIFO never waits for a writer) and ``fstat``'d before
  a byte is read; anything else is treated as absent, and at most
  ``MAX_INSTALLED_BYTES`` are read.
* A FIFO, socket, device or symlink under a name the repository has is not a
  host file syncd manages: the atomic rename replaces it (the entry itself,
  never a symlink's target), as it replaces a regular file someone else
  wrote.  A directory cannot be renamed over: the sync stops before writing
  anything and says which path to remove (exit 2).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from syncd.errors import FatalIOError, StateError, TransientError
from syncd.hostfile import NAME_RE
from syncd.plan import Plan, digest

TEMP_PREFIX = ".syncd-"
STATE_FILE = "state.json"
HEALTH_FILE = "health.json"
LOCK_FILE = "lock"  # the network's lock: state, health, the hosts directory, the applied ref
FETCH_LOCK_FILE = "fetch.lock"  # one fetch at a time: quarantines and the fetched ref
STORE_DIR = "repo.git"
FILE_MODE = 0o644  # host files: tincd may run unprivileged after start-up
DIR_MODE = 0o755  # the hosts directory and any parent syncd creates
PRIVATE_MODE = 0o700  # state_dir and the store: the rollback anchor lives there
PRIVATE_FILE_MODE = 0o600  # lock, state.json, health.json
# The policy's highest max_file_bytes: a larger installed file cannot equal
# any repository file, so it is not read (and counts as different).
MAX_INSTALLED_BYTES = 16 * 1024 * 1024
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class FileStat(NamedTuple):
    """What a manifest remembers of a file it installed, to notice changes
    without reading it: content hash plus the stat that changes on any write."""

    sha256: str
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int

    @classmethod
    def of(cls, sha256: str, st: os.stat_result) -> FileStat:
        return cls(sha256, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def matches(self, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == (
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.ino,
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

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"version": 1}
        for name in self.__slots__:
            if name != "manifest":
                data[name] = getattr(self, name)
        # name: [sha256, size, mtime_ns, ctime_ns, ino]: compact, for 100k nodes
        data["manifest"] = {name: list(f) for name, f in sorted(self.manifest.items())}
        return data


@dataclass(frozen=True, slots=True)
class Health:
    """How the passes went (``state_dir/health.json``), for ``status`` and
    metrics.  Kept apart from the state so that a refused pass leaves the
    state file itself byte-for-byte as it was."""

    last_pass_at: float | None = None
    last_outcome: str | None = None  # applied, unchanged, refused, config, transient, ...
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    last_error_at: float | None = None
    failures: int = 0  # consecutive failed passes

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


def load_health(state_dir: Path) -> Health:
    try:
        raw = json.loads((state_dir / HEALTH_FILE).read_text())
        return Health(**{k: v for k, v in raw.items() if k in Health.__slots__})
    except (OSError, ValueError, TypeError):
        return Health()


def save_health(state_dir: Path, health: Health) -> None:
    ensure_state_dir(state_dir)
    write_atomic(state_dir / HEALTH_FILE, (json.dumps(health.to_json()) + "\n").encode(), PRIVATE_FILE_MODE)


def load_state(state_dir: Path) -> State:
    path = state_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return State()
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable state ({exc}); move it away to start over") from None
    try:
        manifest = {str(n): FileStat(*v) for n, v in raw.get("manifest", {}).items()}
        fields = {k: v for k, v in raw.items() if k in State.__slots__ and k != "manifest"}
        return State(manifest=manifest, **fields)
    except (TypeError, AttributeError) as exc:
        raise StateError(f"{path}: malformed state ({exc}); move it away to start over") from None


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE) -> os.stat_result:
    """Write ``data`` to ``path`` so that a reader sees the old or the new
    file, never a mix; returns the new file's stat.  The caller fsyncs the
    directory."""
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fchmod(fd, mode)  # whatever the umask
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    temp.replace(path)
    return path.lstat()  # after the rename, which changes the ctime


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_state(state_dir: Path, state: State) -> None:
    ensure_state_dir(state_dir)
    data = (json.dumps(state.to_json(), separators=(",", ":")) + "\n").encode()
    write_atomic(state_dir / STATE_FILE, data, PRIVATE_FILE_MODE)
    fsync_dir(state_dir)


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """Create ``path`` and its missing parents, each with exactly ``mode``
    whatever the umask.  Existing directories keep their mode (the operator's
    choice), except a mode-0 one: that is a directory this function made and
    a crash stopped before its chmod."""
    todo: list[Path] = []
    current = path
    while True:  # ends at the first existing directory; "/" always exists
        try:
            st = current.stat()  # following links: /etc/tinc may be one
        except (FileNotFoundError, NotADirectoryError):  # the latter: a parent is a file, found next
            todo.append(current)
            current = current.parent
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise FatalIOError(
                f"{current}: not a directory (syncd needs {path} to be one)",
                hint=f"move {current} away, then sync again",
            )
        if stat.S_IMODE(st.st_mode) != 0 or current == current.parent:
            break
        todo.append(current)
        current = current.parent
    for directory in reversed(todo):
        with contextlib.suppress(FileExistsError):  # made by a concurrent run, or mode-0 from a crash
            directory.mkdir(0)
        directory.chmod(mode)


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


def read_installed(
    hosts_dir: Path, manifest: Mapping[str, FileStat], limit: int = MAX_INSTALLED_BYTES
) -> tuple[dict[str, str], set[str]]:
    """name → sha256 of every valid-named regular file in ``hosts_dir``, and
    the names whose stat no longer matches the manifest (written by someone
    else, or by a run that crashed before saving its state).

    A file whose stat still matches the manifest is not read again.  A file
    over ``limit`` bytes is not read: its digest matches no content."""
    installed: dict[str, str] = {}
    stale: set[str] = set()
    try:
        entries = list(os.scandir(hosts_dir))
    except FileNotFoundError:
        return installed, stale
    for entry in entries:
        name = entry.name
        if not NAME_RE.match(name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        known = manifest.get(name)
        if known is not None and known.matches(st):
            installed[name] = known.sha256
            continue
        if known is not None:
            stale.add(name)
        data = _read_regular(entry.path, limit)
        if data is not None:
            installed[name] = digest(data) if len(data) <= limit else f"over {limit} bytes"
    return installed, stale


def installed_reader(hosts_dir: Path, limit: int = 1 << 20) -> Callable[[str], bytes | None]:
    """``read(name)``: the bytes of the installed regular file ``name``, or
    None (absent, not a regular file, unreadable, or over ``limit`` bytes)."""

    base = os.fspath(hosts_dir)  # plain strings: this runs once per node

    def read(name: str) -> bytes | None:
        if not NAME_RE.match(name):
            return None
        data = _read_regular(f"{base}/{name}", limit)
        return data if data is not None and len(data) <= limit else None

    return read


def _read_regular(path: str, limit: int) -> bytes | None:
    """At most ``limit + 1`` bytes of the regular file at ``path``; None when
    it is absent, unreadable, or anything but a regular file.  The type is
    checked on the open descriptor, so an entry swapped after the directory
    listing cannot slip through; O_NONBLOCK makes opening a FIFO return at
    once instead of waiting for a writer."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def check_replaceable(hosts_dir: Path, names: tuple[str, ...]) -> None:
    """Before the first write: no name to be written is a directory, which
    the rename cannot replace (anything else there is replaced)."""
    base = os.fspath(hosts_dir)
    for name in names:
        path = f"{base}/{name}"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            raise FatalIOError(
                f"{path}: a directory where the repository has the host file {name}; "
                "syncd replaces whatever else is there, but not a directory. Nothing was installed",
                hint=f"remove it (tincd cannot use it either): rm -r {path}, then sync again",
            )


def clean_temp_files(hosts_dir: Path) -> list[str]:
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(hosts_dir):
            if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink()
                removed.append(entry.name)
    return removed


def apply_plan(hosts_dir: Path, plan: Plan, manifest: Mapping[str, FileStat]) -> dict[str, FileStat]:
    """Write and remove what the plan says; return the new manifest.

    The caller saves the manifest (in the state) after this returns."""
    make_dirs(hosts_dir)
    check_replaceable(hosts_dir, plan.writes)
    clean_temp_files(hosts_dir)
    new_manifest: dict[str, FileStat] = {}
    for name in plan.writes:
        data = plan.desired[name]
        st = write_atomic(hosts_dir / name, data)
        new_manifest[name] = FileStat.of(digest(data), st)
    for name in plan.remove:
        (hosts_dir / name).unlink(missing_ok=True)
    fsync_dir(hosts_dir)
    base = os.fspath(hosts_dir)
    for name, data in plan.desired.items():
        if name in new_manifest:
            continue
        known = manifest.get(name)
        st = os.lstat(f"{base}/{name}")  # a valid node name has no "/"
        if known is not None and known.matches(st):
            new_manifest[name] = known
        else:
            new_manifest[name] = FileStat.of(digest(data), st)
    return dict(sorted(new_manifest.items()))


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
                        f"another syncd holds {state_dir / name} (waited {timeout:.0f} s)", reason="locked"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
