"""The installed hosts directory (``tinc.dir/hosts``): read, write, remove.

Crash safety, point by point (the next run must converge whatever happens):

* Each write goes to ``.syncd-NAME.XXXX`` in the hosts directory, is
  fsync'd, then renamed over ``NAME`` (``files.write_many``; many files, as
  on a first sync, are flushed by one sync of the disk before their
  renames): a reader (tincd) sees the old file or the new one, never half
  of one.  Leftover temp files from a crash are
  removed at the start of the next apply; tincd ignores them meanwhile
  (a leading dot is not a valid node name).
* The directory is fsync'd after the renames and removals, and the state
  file (manifest and last applied commit) is written last, the same way
  (``state.py``), once per pass, after tincd's reload.
  If the run dies before that, the next run finds files whose stat no longer
  matches the old manifest, hashes them, sees they already equal the repo,
  and only records them: no rewrite, so no mtime change for tincd; and it
  reloads tincd, since files are installed that the state does not record
  (``pipeline._unrecorded``).
* Only files whose bytes differ are written; unchanged ones keep their inode
  and mtime (tincd 1.0 drops the connection of a peer whose host file has a
  newer mtime at reload).
* A directory syncd creates is made with mode 0 and then chmod'ed: a crash
  between the two leaves a mode-0 directory, which the next run recognises
  as its own unfinished work and finishes (``files.make_dirs``).
* A file kept with the Ed25519 key tincd 1.1 appended to it
  (``learnedkey``) is recorded with its own blob id and stat, read through
  one descriptor, and the key: the manifest never claims bytes the file
  does not have, so a crash anywhere leaves nothing to misread.

What is read, and what is replaced (docs/architecture.md, "Safety rules"):

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
import os
import stat
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from syncd.errors import FatalIOError
from syncd.node.files import TEMP_PREFIX, fsync_dir, make_dirs, write_many
from syncd.rules.plan import Plan, blob_id
from syncd.tinc import learnedkey
from syncd.tinc.names import is_node_name

# The policy's highest max_file_bytes: a larger installed file cannot equal
# any repository file, so it is not read (and counts as different).
MAX_INSTALLED_BYTES = 16 * 1024 * 1024
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class FileStat(NamedTuple):
    """What a manifest remembers of a file it installed, to notice changes
    without reading it: the content's git blob id, plus the stat that changes
    on any write (a cache: a file whose stat changed is read again)."""

    blob: str
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    # the Ed25519 key tincd appended to the repository's version: a file
    # kept as it is (``learnedkey``); ``blob`` is still the file's own id
    learned: str = ""

    @classmethod
    def of(cls, blob: str, st: os.stat_result, learned: str = "") -> FileStat:
        return cls(blob, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, learned)

    def matches(self, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == (
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.ino,
        )


Stat = tuple[int, int, int, int]  # (size, mtime_ns, ctime_ns, ino): what ``FileStat`` compares


class Walked(NamedTuple):
    """What ``stat_hosts`` saw: each valid-named regular file's ``Stat``,
    the directory's ``(st_dev, st_ino)`` (None: no directory), and whether
    any of those files has another link (``st_nlink`` > 1)."""

    stats: dict[str, Stat]
    directory: tuple[int, int] | None = None
    linked: bool = False


def stat_hosts(
    hosts_dir: Path,
    manifest: Mapping[str, FileStat],
    names: Iterable[str] | None = None,
    matched: dict[str, str] | None = None,
) -> Walked:
    """``(size, mtime_ns, ctime_ns, ino)`` of each valid-named regular file
    in ``hosts_dir`` (of ``names`` only, when given).  Plain tuples from one
    ``fstatat`` per file relative to the directory's descriptor: no object
    per file, no path built per file.  With ``matched``, a file whose stat
    matches the manifest goes there instead (name → the manifest's blob id),
    in the same loop."""
    try:
        fd = os.open(hosts_dir, _DIR_FLAGS)
    except FileNotFoundError:
        return Walked({})
    stats: dict[str, Stat] = {}
    lstat, isreg, get, linked = os.stat, stat.S_ISREG, manifest.get, False
    try:
        dir_st = os.fstat(fd)
        for name in os.listdir(fd) if names is None else names:  # noqa: PTH208 -- the descriptor fstat names
            known = get(name)
            if known is None and not is_node_name(name):  # a name in the manifest is a valid one
                continue
            try:
                st = lstat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if isreg(st.st_mode):
                now = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                if matched is not None and known is not None and known[1:5] == now:
                    matched[name] = known[0]
                else:
                    stats[name] = now
                linked = linked or st.st_nlink > 1
    finally:
        os.close(fd)
    return Walked(stats, (dir_st.st_dev, dir_st.st_ino), linked)


def read_installed(
    hosts_dir: Path, manifest: Mapping[str, FileStat], limit: int = MAX_INSTALLED_BYTES
) -> tuple[dict[str, str], set[str]]:
    """name → blob id of every valid-named regular file in ``hosts_dir``, and
    the names whose stat no longer matches the manifest (written by someone
    else, or by a run that crashed before saving its state).

    A file whose stat still matches the manifest is not read again.  A file
    over ``limit`` bytes is not read: its id matches no content."""
    installed: dict[str, str] = {}
    others = stat_hosts(hosts_dir, manifest, matched=installed).stats
    read, stale = installed_from(hosts_dir, others, manifest, limit)
    installed.update(read)
    return installed, stale


def installed_from(
    hosts_dir: Path, stats: Mapping[str, Stat], manifest: Mapping[str, FileStat], limit: int = MAX_INSTALLED_BYTES
) -> tuple[dict[str, str], set[str]]:
    """``read_installed`` from the files' stats (``stat_hosts``): a file
    whose stat matches the manifest has the manifest's blob id; any other is
    read (and its id computed from its bytes)."""
    installed: dict[str, str] = {}
    stale: set[str] = set()
    base = os.fspath(hosts_dir)
    for name, now in stats.items():
        known = manifest.get(name)
        if known is not None:
            if known[1:5] == now:
                installed[name] = known.blob
                continue
            stale.add(name)
        data = _read_regular(f"{base}/{name}", limit)
        if data is not None:
            installed[name] = blob_id(data) if len(data) <= limit else f"over {limit} bytes"
    return installed, stale


def installed_reader(hosts_dir: Path, limit: int = 1 << 20) -> Callable[[str], bytes | None]:
    """``read(name)``: the bytes of the installed regular file ``name``, or
    None (absent, not a regular file, unreadable, or over ``limit`` bytes)."""

    base = os.fspath(hosts_dir)  # plain strings: this runs once per node

    def read(name: str) -> bytes | None:
        if not is_node_name(name):
            return None
        data = _read_regular(f"{base}/{name}", limit)
        return data if data is not None and len(data) <= limit else None

    return read


def _read_regular(path: str, limit: int) -> bytes | None:
    """At most ``limit + 1`` bytes of the regular file at ``path``; None when
    it is absent, unreadable, or anything but a regular file."""
    read = _read_with_stat(path, limit)
    return None if read is None else read[0]


def _read_with_stat(path: str, limit: int) -> tuple[bytes, os.stat_result] | None:
    """``_read_regular``, and the file's stat.  The type is checked on the
    open descriptor, so an entry swapped after the directory listing cannot
    slip through; O_NONBLOCK makes opening a FIFO return at once instead of
    waiting for a writer."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    except OSError:
        return None
    finally:
        os.close(fd)


def check_hosts_dir(hosts_dir: Path) -> None:
    """``tinc.dir/hosts`` is a real directory (or not there yet): a symlink
    would send every write and removal to wherever it points, and a file
    cannot hold host files.  Asked before anything there is read or written;
    exit 2 (``FatalIOError``), since no retry replaces it."""
    try:
        st = os.lstat(hosts_dir)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        return
    link = stat.S_ISLNK(st.st_mode)
    what = f"a symlink (to {hosts_dir.readlink()}), not a directory" if link else "not a directory"
    raise FatalIOError(
        f"{hosts_dir}: {what}; syncd installs host files only into a real directory, never through a link. "
        "Nothing was read or installed",
        hint=f"replace {hosts_dir} with a directory (rm {hosts_dir}; the next sync creates it and installs "
        "every host file), or point tinc.dir in the node's config at the real tinc directory",
    )


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


def apply_plan(
    hosts_dir: Path, plan: Plan, manifest: Mapping[str, FileStat], recheck: Collection[str] | None = None
) -> dict[str, FileStat]:
    """Write and remove what the plan says; return the new manifest.

    ``recheck``: the managed names whose stat no longer matched the
    manifest when the pass read the directory (``read_installed``'s
    ``stale``); None: every name is checked.  Only those, the files written,
    the names the manifest lacks (adopted) and those whose learned key
    changed are looked at: any other name keeps the manifest's record as it
    is, stat included, so a file changed since the pass read the directory
    still fails the stat comparison next pass and is read then, rather than
    recorded with content it may not have.

    The caller saves the manifest (in the state) after this returns."""
    check_hosts_dir(hosts_dir)
    make_dirs(hosts_dir)
    check_replaceable(hosts_dir, plan.writes)
    clean_temp_files(hosts_dir)
    new_manifest: dict[str, FileStat] = {}
    written = write_many(hosts_dir, {name: plan.desired[name] for name in plan.writes})
    for name, st in written.items():
        new_manifest[name] = FileStat.of(plan.ids[name], st)
    for name in plan.remove:
        (hosts_dir / name).unlink(missing_ok=True)
    fsync_dir(hosts_dir)
    base, learned_keys = os.fspath(hosts_dir), plan.learned
    for name, blob in plan.ids.items():
        if name in new_manifest:
            continue
        known = manifest.get(name)
        learned = learned_keys.get(name, "")
        if known is not None and known.learned == learned and recheck is not None and name not in recheck:
            new_manifest[name] = known
            continue
        st = os.lstat(f"{base}/{name}")  # a valid node name has no "/"
        if known is not None and known.matches(st) and known.learned == learned:
            new_manifest[name] = known
        elif learned:
            new_manifest[name] = _kept_as_is(f"{base}/{name}", learned)
        else:
            new_manifest[name] = FileStat.of(blob, st)
    return dict(sorted(new_manifest.items()))


def _kept_as_is(path: str, learned: str) -> FileStat:
    """What the manifest records of a file kept with the key tincd appended:
    its own blob id and stat, read through one descriptor (so that both
    describe the same bytes, however often tincd appends meanwhile)."""
    read = _read_with_stat(path, MAX_INSTALLED_BYTES)
    if read is None:  # gone since the plan: the next pass installs it again
        return FileStat("", -1, -1, -1, -1)
    data, st = read
    return FileStat.of(blob_id(data), st, learned)


def appended_since(hosts_dir: Path, name: str, known: FileStat) -> str | None:
    """The Ed25519 key tincd appended to ``name`` since syncd recorded it as
    ``known``, or None.  For ``status``, which has no repository: the file
    must be what was recorded plus tincd's blocks (compared by blob id), on
    top of a version that names no Ed25519 key (``learnedkey``)."""
    data = _read_regular(f"{os.fspath(hosts_dir)}/{name}", MAX_INSTALLED_BYTES)
    split = None if data is None else learnedkey.split_appended(data)
    if data is None or split is None:
        return None
    base, key = split
    block = learnedkey.block(key)
    blocks = (len(data) - len(base)) // len(block)
    if all(blob_id(base + block * count) != known.blob for count in range(blocks + 1)):
        return None
    return learnedkey.appended_key(base, data)


class HostsDir:
    """The installed hosts directory as the pipeline sees it
    (the ``sync.ports.InstalledHosts`` port)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read = installed_reader(path)

    def scan(self, manifest: Mapping[str, FileStat]) -> tuple[dict[str, str], set[str]]:
        check_hosts_dir(self.path)
        return read_installed(self.path, manifest)

    def read(self, name: str) -> bytes | None:
        return self._read(name)

    def apply(
        self, plan: Plan, manifest: Mapping[str, FileStat], recheck: Collection[str] | None = None
    ) -> dict[str, FileStat]:
        return apply_plan(self.path, plan, manifest, recheck)
