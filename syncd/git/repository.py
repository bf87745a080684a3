"""A git repository read with dulwich, without trusting it.

Everything is bounded before it is read: commit and tree objects by a fixed
cap, host-file blobs by the policy's ``max_file_bytes``, the hosts directory
by ``max_files`` entries.  Sizes are taken from the object headers
(``objects.object_size``) without inflating the body.  A history walk, a
tree diff and a file lookup read each tree once per pass.

This is the ``sync.ports.Repository`` of a pass: syncd's own store
(``store.GitStore.repository``, whose damage is repaired), or someone else's
repository, only read (``GitRepository.reading``, for ``syncd verify``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from dulwich.errors import NotTreeError
from dulwich.object_store import DiskObjectStore, tree_lookup_path
from dulwich.objects import Commit, ObjectID, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo

from syncd.errors import SyncdError, UnsafeTreeError
from syncd.git.commitdiff import CommitDiff, commit_diff, known_diff
from syncd.git.objects import (
    MAX_TREE_BYTES,
    ObjectSizes,
    entry_kind,
    object_id,
    raw_tree_reader,
    read_commit,
)
from syncd.git.treediff import Trees
from syncd.rules.policy import POLICY_FILE
from syncd.rules.tree import EntryKind, TreeEntry
from syncd.signing.commits import CommitInfo

MAX_POLICY_BYTES = 1 << 20

# What reading a damaged store raises (a missing object, a bad checksum or
# zlib stream, an unparsable object): the store is repaired, not the input refused.
STORE_DAMAGE = (KeyError, zlib.error, ValueError, AssertionError, OSError)


class GitRepository:
    """Commits, history and trees of one repository, read with limits."""

    def __init__(self, path: Path, repo: Repo, store: DiskObjectStore, on_damage: Callable[[str], SyncdError]) -> None:
        self.path = path
        self.repo = repo
        self.store = store
        self.on_damage = on_damage  # what damage found while reading raises (given why)
        self._changed: dict[str, dict[str, ObjectID | None]] = {}
        self._commits: dict[str, tuple[CommitInfo, ObjectID]] = {}  # with its root tree
        self._sizes = ObjectSizes(store)  # the pack list read once: dulwich lists the pack directory each time
        # trees parsed once per pass, a child's by way of its parent's
        self._trees = Trees(raw_tree_reader(self._sizes))

    @classmethod
    def reading(cls, path: Path) -> GitRepository:
        """Someone else's repository, only read (``syncd verify``).  In a
        git hook during a push, git keeps the pushed objects in a quarantine
        (``GIT_OBJECT_DIRECTORY``, with the repository's own objects as
        ``GIT_ALTERNATE_OBJECT_DIRECTORIES``): read through both.  What
        cannot be read is refused."""
        repo = Repo(str(path))
        quarantine = os.environ.get("GIT_OBJECT_DIRECTORY")
        if quarantine:
            alternates = [p for p in os.environ.get("GIT_ALTERNATE_OBJECT_DIRECTORIES", "").split(os.pathsep) if p]
            store = DiskObjectStore(quarantine, alternates=alternates)
        else:
            own = repo.object_store
            assert isinstance(own, DiskObjectStore)
            store = own

        def refuse(why: str) -> SyncdError:
            return UnsafeTreeError(f"the repository {path} is missing objects or damaged: {why}")

        return cls(path, repo, store, refuse)

    def resolve(self, rev: str) -> str:
        """A commit id from an id or a ref name (``main``, ``refs/heads/main``)."""
        for name in (rev, f"refs/heads/{rev}", f"refs/tags/{rev}"):
            try:
                sha = self.repo.refs[Ref(name.encode())]
            except KeyError:
                continue
            return sha.decode()
        if len(rev) == 40 and all(c in "0123456789abcdef" for c in rev) and object_id(rev) in self.store:
            return rev
        raise UnsafeTreeError(f"no commit {rev!r} in {self.path}")

    def head_branch(self) -> tuple[str, ...]:
        """The branch ``HEAD`` names (a bare repository's default branch), if any."""
        target = self.repo.refs.read_ref(Ref(b"HEAD")) or b""
        return (target[16:].decode("utf-8", "replace"),) if target.startswith(b"ref: refs/heads/") else ()

    def close(self) -> None:
        self._sizes.close()
        self.repo.close()

    # --- history --------------------------------------------------------------------

    def has(self, sha: str) -> bool:
        return object_id(sha) in self.store

    def commit(self, sha: str) -> CommitInfo:
        return self._commit(sha)[0]

    def _commit(self, sha: str) -> tuple[CommitInfo, ObjectID]:
        """A commit and its root tree, read once per pass (a pass asks for
        each new commit's history, changes and files)."""
        known = self._commits.get(sha)
        if known is None:
            with self._repairing():
                known = self._commits[sha] = read_commit(self.store, sha, self._sizes)
        return known

    def ancestors(self, tip: str, stop: str | None = None) -> Iterator[CommitInfo]:
        """Commits reachable from ``tip`` and not from ``stop``, newest first
        by walk order (each once; merges' second parents included).

        A hosts repository's history is usually a line: when the first
        parents lead from ``tip`` to ``stop`` through no merge, those commits
        are exactly the range and nothing else is read.  Otherwise all of
        ``stop``'s history is excluded the exact (and slower) way."""
        if stop is not None:
            line: list[CommitInfo] = []
            sha = tip
            while sha != stop:
                info = self.commit(sha)
                if len(info.parents) != 1:
                    break  # a merge, or the root without meeting stop
                line.append(info)
                sha = info.parents[0]
            else:
                yield from line
                return
        excluded: set[str] = set()
        if stop is not None:
            excluded = {c.sha for c in self._walk(stop, set())}
        yield from self._walk(tip, excluded)

    def _walk(self, tip: str, excluded: set[str]) -> Iterator[CommitInfo]:
        seen = set(excluded)
        pending = [tip]
        while pending:
            sha = pending.pop()
            if sha in seen:
                continue
            seen.add(sha)
            info = self.commit(sha)
            yield info
            pending.extend(p for p in info.parents if p not in seen)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        if ancestor == descendant:
            return True
        with self._repairing():
            return any(info.sha == ancestor for info in self._walk(descendant, set()))

    def changed_paths(self, sha: str) -> tuple[str, ...]:
        """The paths ``sha`` changes against its first parent (every file of
        a root commit), sorted; identical subtrees are skipped unread.  Asked
        twice per new commit (its authority, the audit log): kept."""
        return tuple(self._changes(sha))

    def changed_blob_sizes(self, sha: str) -> dict[str, int]:
        """The size of each blob ``sha`` adds or changes against its first
        parent (anywhere in its tree), by path, from the object headers."""
        changes = self._changes(sha)
        with self._repairing():
            return {path: self._sizes(oid) for path, oid in changes.items() if oid is not None}

    def _changes(self, sha: str) -> dict[str, ObjectID | None]:
        known = self._changed.get(sha)
        if known is None:
            known = self._changed[sha] = self._diff(sha).blobs()
        return known

    def _diff(self, sha: str) -> CommitDiff:
        """What ``sha`` changes (``commitdiff``: the fetch that brought it
        computed it already, as a rule)."""
        info, tree = self._commit(sha)
        old = self._commit(info.parents[0])[1] if info.parents else None
        with self._repairing():
            return commit_diff(self._trees, object_id(sha), old, tree)

    # --- trees ----------------------------------------------------------------------

    def policy_bytes(self, commit: str) -> bytes | None:
        """The commit's ``syncd.yaml``, or None."""
        with self._repairing():
            root = self._root_tree(commit)
            try:
                mode, sha = root[POLICY_FILE.encode()]
            except KeyError:
                return None
            if not stat.S_ISREG(mode):
                raise UnsafeTreeError(f"{POLICY_FILE} in commit {commit[:12]} is not a regular file")
            return self._read_blob(sha, MAX_POLICY_BYTES, POLICY_FILE)

    def host_entries(
        self, commit: str, hosts_dir: str, max_files: int, max_file_bytes: int, sizes: Mapping[str, int] | None = None
    ) -> list[TreeEntry]:
        """The entries of ``hosts_dir`` with their kinds, sizes and blob ids;
        no blob is read (``blob`` reads one).  The entry count is checked
        before the entries are looked at, each size from its object header
        (or from ``sizes``, blob id → size, where the caller knows it)."""
        with self._repairing():
            tree = self._hosts_tree(commit, hosts_dir, max_files)
            entries = []
            known = sizes or {}
            file, new = EntryKind.FILE, tuple.__new__  # a TreeEntry of fields known good, built without its __new__
            for path, mode, sha in tree.iteritems():
                name = path.decode("utf-8", "replace")
                if mode & 0o170000 == stat.S_IFREG:  # entry_kind(mode) is EntryKind.FILE
                    blob = sha.decode("ascii")
                    size = known.get(blob)
                    size = size if size is not None else self._sizes(sha)
                    entries.append(new(TreeEntry, (name, file, size, None, blob)))
                else:
                    entries.append(TreeEntry(name, entry_kind(mode), 0, None))
            return entries

    def file_at(self, sha: str, path: str, limit: int) -> bytes | None:
        """The regular file at ``path`` in commit ``sha`` (size-checked
        first), or None when there is none.  Trees come from the pass's
        cache: asking for many files of one commit parses its trees once."""
        changed = known_diff(object_id(sha))
        if changed is not None and changed.plain and path in changed.entries:  # the entry the commit wrote
            found = changed.entries[path]
            if found is None or not stat.S_ISREG(found[0]):
                return None
            with self._repairing():
                return self._read_blob(found[1], limit, f"{path} in commit {sha[:12]}")
        mode, oid = stat.S_IFDIR, self._commit(sha)[1]
        with self._repairing():
            for part in path.split("/"):
                if not stat.S_ISDIR(mode):
                    return None
                found = self._trees.lookup(oid, part)
                if found is None:
                    return None
                mode, oid = found
            if not stat.S_ISREG(mode):
                return None
            return self._read_blob(oid, limit, f"{path} in commit {sha[:12]}")

    def blob(self, blob: str, limit: int) -> bytes:
        """A blob's bytes, its size checked (from its header) first."""
        with self._repairing():
            return self._read_blob(object_id(blob), limit, f"blob {blob}")

    def _hosts_tree(self, commit: str, hosts_dir: str, max_files: int) -> Tree:
        root = self._root_tree(commit)
        try:
            mode, sha = tree_lookup_path(self.store.__getitem__, root.id, hosts_dir.encode())
        except (KeyError, NotTreeError):
            raise UnsafeTreeError(f"commit {commit[:12]} has no directory {hosts_dir}/") from None
        if not stat.S_ISDIR(mode):
            raise UnsafeTreeError(f"{hosts_dir} in commit {commit[:12]} is not a directory")
        tree = self._tree(sha, f"{hosts_dir}/")
        if len(tree) > max_files:
            raise UnsafeTreeError(
                f"{hosts_dir}/ in commit {commit[:12]} has {len(tree)} entries, over the policy's "
                f"max_files ({max_files}); nothing was read"
            )
        return tree

    @contextlib.contextmanager
    def _repairing(self) -> Iterator[None]:
        """Damage found while reading (a missing object, a bad checksum or
        zlib stream) is ``on_damage``'s to judge: in syncd's own store it is
        set aside and the pass fails as transient (``GitStore.repaired``); in
        someone else's repository (``reading``) it refuses what cannot be read.
        Never a refusal of the input's content."""
        try:
            yield
        except STORE_DAMAGE as exc:
            raise self.on_damage(f"{type(exc).__name__}: {exc}") from None

    def _root_tree(self, commit_sha: str) -> Tree:
        info = self.store[object_id(commit_sha)]
        assert isinstance(info, Commit)
        return self._tree(info.tree, "the root tree")

    def _tree(self, sha: ObjectID, what: str) -> Tree:
        size = self._sizes(sha)
        if size > MAX_TREE_BYTES:
            raise UnsafeTreeError(f"{what} is {size} bytes, over {MAX_TREE_BYTES}")
        tree = self.store[sha]
        if not isinstance(tree, Tree):
            raise UnsafeTreeError(f"{what} is not a tree")
        return tree

    def _read_blob(self, sha: ObjectID, limit: int, what: str) -> bytes:
        size = self._sizes(sha)
        if size > limit:
            raise UnsafeTreeError(f"{what} is {size} bytes, over {limit}")
        return self._sizes.read(sha)
