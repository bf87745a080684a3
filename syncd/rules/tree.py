"""One tree of the hosts repository, wherever it lives (pure).

A ``TreeSource`` hands out the tree's ``syncd.yaml`` and the entries of its
hosts directory as bytes; ``validate.check_tree`` turns them into a
``Report``.  A working tree on disk (``cli.worktree.WorkTree``, for ``syncd
check`` and ``add-node``) and a signed git commit (for ``syncd sync``) are
both sources, so a commit passes on the nodes exactly when ``syncd check``
passes it.
"""

from __future__ import annotations

import enum
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from syncd.rules.policy import policy_of


class EntryKind(enum.StrEnum):
    FILE = "file"
    SYMLINK = "symlink"
    DIRECTORY = "directory"
    SUBMODULE = "submodule"
    OTHER = "other"


class TreeEntry(NamedTuple):
    """One entry of the hosts directory.  ``data`` is None when it was not
    read (not a regular file, over ``max_file_bytes``, or not needed: a git
    tree names each file's content by its ``blob`` id, and a parse index
    may already know it)."""

    name: str
    kind: EntryKind
    size: int
    data: bytes | None
    blob: str | None = None  # git's blob id, when the entry comes from a git tree


class TreeSource(Protocol):
    @property
    def label(self) -> str:
        """Names the tree in messages (a directory, a commit)."""
        ...

    def policy_bytes(self) -> bytes | None:
        """``syncd.yaml`` of the tree, or None when it has none."""
        ...

    def host_entries(self, hosts_dir: str, max_files: int, max_file_bytes: int) -> list[TreeEntry]:
        """The entries of ``hosts_dir``; no file over ``max_file_bytes`` is read."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """A tree held in memory: a source read once (to be checked again, say
    with a file added), or a tree a test builds.  Its entries are those of
    the hosts directory it was read with, whatever ``host_entries`` is asked."""

    label: str
    policy: bytes | None
    entries: tuple[TreeEntry, ...]

    def policy_bytes(self) -> bytes | None:
        return self.policy

    def host_entries(self, hosts_dir: str, max_files: int, max_file_bytes: int) -> list[TreeEntry]:
        return list(self.entries)

    def with_entry(self, entry: TreeEntry) -> Snapshot:
        return Snapshot(self.label, self.policy, (*self.entries, entry))


def snapshot(source: TreeSource) -> Snapshot:
    """Read ``source`` once, with the limits of its own policy."""
    data = source.policy_bytes()
    policy, _ = policy_of(data)
    entries = source.host_entries(policy.hosts_dir, policy.max_files, policy.max_file_bytes)
    return Snapshot(source.label, data, tuple(entries))


@contextmanager
def without_gc() -> Iterator[None]:
    """For a check: it builds a few objects per host-file line and creates
    no cycles, so the cyclic collector would only rescan them, again and
    again (a fifth of the run time on 10k nodes)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            # Move what the check left alive to the oldest generation without
            # scanning it: enabling the collector as it is would at once scan
            # every object the check made, all of them still young.
            gc.freeze()
            gc.unfreeze()
            gc.enable()
