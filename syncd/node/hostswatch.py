"""The hosts directory under an inotify watch (``syncd run``): drift is
noticed within a second, and a pass reads the directory without a stat
of every file when the watch shows what changed.

Why the cached stats are exact (each point is checked in ``scan``; when one
does not hold, the pass stats every file, as a fresh ``syncd sync`` does):

* The watch is made before the walk it vouches for (``start`` returns once
  the kernel watch exists), and the set of changed names is emptied just
  before the walk: a change during the walk is reported again next pass.
* Every change to a directory entry or to a file's bytes, mode, owner or
  times through ``hosts/`` queues an inotify event on the directory's watch
  (inotify(7): IN_CREATE, IN_DELETE, IN_MOVED_FROM/TO, IN_MODIFY, IN_ATTRIB,
  IN_CLOSE_WRITE).  Each event names the file: that name is stat'ed again
  next pass — syncd's own writes and removals included, so they are
  accounted for like anyone's.
* An event that names no single file of the directory (the directory
  itself changed or deleted, an event elsewhere) and a lost event
  (IN_Q_OVERFLOW: watchdog's ``EventsLostEvent``) make the next pass stat
  every file; so do a watcher thread that died and a directory whose
  ``(st_dev, st_ino)`` is no longer the one watched and walked (``mv hosts
  hosts.old; mkdir hosts``: the watch stays on the old directory, and the
  next pass watches the new one).
* An event in flight when a pass begins is not lost: it marks its name for
  the pass after, and it asks the loop for a repair pass (``on_change``), as
  any drift does.  A pass thus reflects every change up to a moment just
  before it, the same as a walk, whose stat of a file may precede a change
  to it too.
* What the kernel does not report through a watch on the directory (a
  write through a hard link made elsewhere, through a shared memory map, or
  from another host on a network filesystem) is seen by a full walk: one
  runs at least every ``FULL_WALK_EVERY`` seconds, and whenever a file has
  more than one link when walked (``st_nlink``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from syncd.node.files import make_dirs
from syncd.node.hostsdir import FileStat, HostsDir, Stat, check_hosts_dir, installed_from, stat_hosts
from syncd.tinc.names import is_node_name

FULL_WALK_EVERY = 3600.0  # seconds: what inotify cannot see is seen by a walk this often
_IGNORED = frozenset({"opened", "closed_no_write"})  # reads change nothing a scan compares


class WatchedHosts(HostsDir):
    """``HostsDir`` whose ``scan`` stats only the names the watch reported
    since the last pass (see the module doc).  ``on_change()`` is called from
    the watcher's thread for each event on a valid node name."""

    def __init__(self, path: Path, on_change: Callable[[], None] = lambda: None) -> None:
        super().__init__(path)
        self.on_change = on_change
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._everything = True  # no walk yet, or an event the names cannot describe
        self._observer: Any = None
        self._watched: tuple[int, int] | None = None  # (st_dev, st_ino) of the watched directory
        self._stats: dict[str, Stat] = {}  # the last walk's, updated by name since
        self._walked: tuple[int, int] | None = None  # the directory that walk read
        self._walked_at = 0.0
        self._result: tuple[Mapping[str, FileStat], dict[str, str], set[str]] | None = None  # the last scan's
        self.walks = 0  # full walks so far (for tests and benchmarks)

    # --- the watch ---------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the directory (made first, 0755 as a sync makes it).  The
        kernel watch exists when this returns; the next pass walks."""
        from watchdog.observers import Observer

        make_dirs(self.path)
        self.stop()
        before = _identity(self.path)
        observer = Observer()
        observer.schedule(_Handler(self), str(self.path), recursive=False)
        observer.daemon = True
        observer.start()
        after = _identity(self.path)
        with self._lock:
            self._observer = observer
            self._watched = before if before == after else None  # replaced meanwhile: watch again next pass
            self._everything = True

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer is not threading.current_thread():
                observer.join(timeout=5)

    def changed(self, names: Collection[str] | None) -> None:
        """An event: these names changed (None: anything may have)."""
        with self._lock:
            if names is None:
                self._everything = True
            else:
                self._dirty.update(names)
        if names is None or any(is_node_name(n) for n in names):
            self.on_change()

    def _watching(self) -> bool:
        """Every thread the events pass through is alive: the observer, its
        emitter, and the thread that reads the inotify descriptor (in
        watchdog 7 one for the process, an attribute of the emitter)."""
        observer = self._observer
        if observer is None or not observer.is_alive() or not observer.emitters:
            return False
        threads = [observer, *observer.emitters]
        threads += [v for e in observer.emitters for v in vars(e).values() if isinstance(v, threading.Thread)]
        return all(thread.is_alive() for thread in threads)

    # --- the port ----------------------------------------------------------------------------

    def scan(self, manifest: Mapping[str, FileStat]) -> tuple[dict[str, str], set[str]]:
        """``read_installed``'s answer.  The last one is kept with the
        manifest it was computed against, and only the names whose stat or
        manifest entry changed since are computed again (the manifest is
        compared by identity first: ``state.load_state`` returns the same
        State while its file is unchanged).  A blob id kept for a file whose
        stat did not match the manifest is exact for the same reason its
        stat is: no event, no change."""
        check_hosts_dir(self.path)
        restated = self._restat(manifest)
        kept = self._result
        if restated is None or kept is None:
            installed, stale = installed_from(self.path, self._stats, manifest)
        else:
            before, installed, stale = kept
            again = set(restated)
            if before is not manifest:
                again.update(name for name, known in manifest.items() if before.get(name) != known)
                again.update(before.keys() - manifest.keys())
            for name in again:
                installed.pop(name, None)
                stale.discard(name)
            now = {name: self._stats[name] for name in again if name in self._stats}
            fresh, fresh_stale = installed_from(self.path, now, manifest)
            installed.update(fresh)
            stale |= fresh_stale
        self._result = (manifest, installed, stale)
        return dict(installed), set(stale)

    def _restat(self, manifest: Mapping[str, FileStat]) -> set[str] | None:
        """Bring ``_stats`` up to date: the names re-stat'ed, or None after
        a walk of every file (see the module doc for when)."""
        with self._lock:  # emptied before the stats are taken: later events count next pass
            dirty, everything = self._dirty, self._everything
            self._dirty, self._everything = set(), False
        here = _identity(self.path)
        vouched = (
            not everything
            and self._watching()
            and here is not None
            and here == self._watched == self._walked
            and time.monotonic() - self._walked_at < FULL_WALK_EVERY
        )
        if vouched:
            fresh = stat_hosts(self.path, manifest, sorted(dirty))
            for name in dirty:
                self._stats.pop(name, None)
            self._stats.update(fresh.stats)
            if fresh.linked:
                self._walked = None  # the next pass walks, until no file has another link
            return dirty
        if self._observer is not None and (not self._watching() or here != self._watched):
            self.start()  # a new watch before the walk it vouches for
            with self._lock:
                self._dirty, self._everything = set(), False
        self._stats, self._walked = self._walk(manifest)
        return None

    def _walk(self, manifest: Mapping[str, FileStat]) -> tuple[dict[str, Stat], tuple[int, int] | None]:
        self.walks += 1
        self._walked_at = time.monotonic()
        walked = stat_hosts(self.path, manifest)
        # a file reachable by another path too: a write there is no event here
        return walked.stats, None if walked.linked else walked.directory


class _Handler(FileSystemEventHandler):
    """watchdog's event handler: each event marks its names (``changed``)."""

    def __init__(self, hosts: WatchedHosts) -> None:
        super().__init__()
        self.hosts = hosts
        self.root = os.fspath(hosts.path)

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED:
            return
        paths = [os.fsdecode(p) for p in (event.src_path, getattr(event, "dest_path", "")) if p]
        if event.event_type == "modified" and event.is_directory and paths == [self.root]:
            return  # watchdog's companion of a per-file event, which names the file
        split = [p.rpartition("/") for p in paths]
        names = [name for head, _, name in split if head == self.root and name]
        self.hosts.changed(names if names and len(names) == len(paths) else None)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)
