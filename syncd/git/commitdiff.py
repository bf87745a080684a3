"""What a commit changes against its first parent, computed once per process.

The connectivity check of a fetch (``objects.check_connected``) and the
history of the pass that follows (``repository.GitRepository``: the paths a
commit changes, the sizes of the blobs it adds, the host files the authority
rule reads) need the same thing of each new commit: every path whose entry
differs from the first parent's tree, with the entry it has now.  The check
computes it (it must read those trees anyway, to find what the pack lacks)
and keeps it here; the pass reads it back instead of diffing the same trees
a second time.

The cache is exact: it is keyed by the commit's id, and a commit's id fixes
its root tree's id and its parents' ids, hence both trees' contents, whatever
store they were read from.  Only a diff that was read through completely is
kept; a commit whose trees could not be read is diffed (and fails) anew.
"""

from __future__ import annotations

import stat
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from dulwich.objects import ObjectID

from syncd.git.treediff import Entry, Trees

SUBMODULE_MODE = 0o160000
MAX_KEPT_PATHS = 200_000  # paths kept over all commits (a first sync of a 10k-node network: 10k)


class MissingTreeError(KeyError):
    """A tree a diff needs is not in the store (a ``KeyError``, as dulwich
    says so: damage, to whoever reads the store); ``path``: where (``""``: a
    root tree)."""

    def __init__(self, oid: ObjectID) -> None:
        super().__init__(oid)
        self.oid = oid
        self.path: str | None = None


@dataclass(frozen=True, slots=True)
class CommitDiff:
    """Each path a commit changes, sorted, with its entry in the commit
    (mode, id; None: removed, or now a directory's path).  ``plain``: no
    name on the way contains ``/``, so each path is also where a lookup by
    path components finds that entry (git never writes such a name; a
    hostile tree may)."""

    entries: dict[str, Entry | None]
    plain: bool

    def blobs(self) -> dict[str, ObjectID | None]:
        """Each path with the blob it names now (None: removed, or a submodule's commit)."""
        return {p: None if e is None or e[0] == SUBMODULE_MODE else e[1] for p, e in self.entries.items()}


class _Kept:
    """The diffs kept, least recently used first out, bounded by their paths."""

    def __init__(self) -> None:
        self.diffs: OrderedDict[ObjectID, CommitDiff] = OrderedDict()
        self.paths = 0

    def get(self, commit: ObjectID) -> CommitDiff | None:
        known = self.diffs.get(commit)
        if known is not None:
            self.diffs.move_to_end(commit)
        return known

    def keep(self, commit: ObjectID, diff: CommitDiff) -> None:
        self.diffs[commit] = diff
        self.paths += len(diff.entries)
        while self.paths > MAX_KEPT_PATHS and len(self.diffs) > 1:
            self.paths -= len(self.diffs.popitem(last=False)[1].entries)

    def clear(self) -> None:
        self.diffs.clear()
        self.paths = 0


_KEPT = _Kept()


def known_diff(commit: ObjectID) -> CommitDiff | None:
    """The diff of ``commit`` if one was computed (``commit_diff``)."""
    return _KEPT.get(commit)


def commit_diff(
    trees: Trees, commit: ObjectID, old: ObjectID | None, new: ObjectID, *, fresh: bool = False
) -> CommitDiff:
    """The diff of ``commit``'s root tree ``new`` against its first parent's
    ``old`` (None: a root commit, every path), from the cache or computed
    with ``trees`` and kept.  ``fresh``: computed with ``trees`` whatever
    is kept (a check that the trees are in ``trees``' store)."""
    known = None if fresh else _KEPT.get(commit)
    if known is not None:
        return known
    entries: dict[str, Entry | None] = {}
    plain = True
    for path, entry, slash in _diff(trees, old, new, ""):
        entries[path] = entry
        plain = plain and not slash
    diff = CommitDiff(dict(sorted(entries.items())), plain)
    _KEPT.keep(commit, diff)
    return diff


def _diff(
    trees: Trees, old: ObjectID | None, new: ObjectID | None, prefix: str
) -> Iterator[tuple[str, Entry | None, bool]]:
    """Every path under ``prefix`` whose entry differs, with its entry in
    ``new`` (None: removed), and whether a name on its way holds ``/``;
    identical subtrees are skipped unread, and a tree is compared with its
    old self on its raw bytes (``treediff``)."""
    try:
        changed = trees.diff(old, new)
    except MissingTreeError as exc:
        exc.path = prefix if exc.path is None else exc.path
        raise
    for name, (a, b) in changed.items():
        slash = "/" in name
        a_dir = a is not None and stat.S_ISDIR(a[0])
        b_dir = b is not None and stat.S_ISDIR(b[0])
        if a_dir or b_dir:
            below = _diff(trees, a[1] if a and a_dir else None, b[1] if b and b_dir else None, f"{prefix}{name}/")
            yield from ((path, entry, slash or deeper) for path, entry, deeper in below)
        if b is not None and not b_dir:
            yield prefix + name, b, slash
        elif a is not None and not a_dir:
            yield prefix + name, None, slash


def forget() -> None:
    """Drop every kept diff (for tests that count reads)."""
    _KEPT.clear()
