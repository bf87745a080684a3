"""git objects read without trusting them (dulwich): a commit split as git
splits it, kinds of tree entries, the connectivity of new objects, and object
sizes from their headers (nothing is inflated whole to learn its size)."""

from __future__ import annotations

import os
import stat
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, cast

from dulwich.errors import ObjectFormatException
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit, ObjectID, ShaFile, Tree, hex_to_filename
from dulwich.pack import Pack

from syncd.errors import UnsafeTreeError
from syncd.git.commitdiff import SUBMODULE_MODE, MissingTreeError, commit_diff
from syncd.git.packscan import PackFormatError, index_object_ids, index_offsets, inflate_prefix, packed_size
from syncd.git.treediff import RawTree, Trees
from syncd.rules.plan import blob_id as plan_blob_id
from syncd.rules.tree import EntryKind
from syncd.signing.commits import CommitInfo, split_commit

MAX_COMMIT_BYTES = 1 << 20  # a commit (with its signature) larger than this is refused
MAX_TREE_BYTES = 64 << 20  # 100k entries of ~40 bytes fit easily
KEPT_COMMITS = 4096  # commits read kept in a process (a pass reads each new one twice)
MAPPED_AFTER = 256  # object lookups before the pack indexes are read into maps (10k ids: a few ms)


def entry_kind(mode: int) -> EntryKind:
    if mode == SUBMODULE_MODE:
        return EntryKind.SUBMODULE
    if stat.S_ISLNK(mode):
        return EntryKind.SYMLINK
    if stat.S_ISDIR(mode):
        return EntryKind.DIRECTORY
    return EntryKind.FILE if stat.S_ISREG(mode) else EntryKind.OTHER


def commit_info(store: DiskObjectStore, sha: str, sizes: ObjectSizes | None = None) -> CommitInfo:
    """A commit read from ``store`` (size-checked first, by ``sizes`` if
    given), its signature split off exactly as git does
    (``commits.split_commit``)."""
    return read_commit(store, sha, sizes)[0]


def read_commit(store: DiskObjectStore, sha: str, sizes: ObjectSizes | None = None) -> tuple[CommitInfo, ObjectID]:
    """``commit_info``, and the id of the commit's root tree.  A commit
    read before in this process (by a fetch's connectivity check, as a
    rule) is not read again: an id names the same bytes in any store."""
    known = _READ.get(sha)
    if known is not None:
        _READ.move_to_end(sha)
        return known
    oid = object_id(sha)
    size = sizes(oid) if sizes is not None else object_size(store, oid)
    if size > MAX_COMMIT_BYTES:
        raise UnsafeTreeError(f"commit {sha} is {size} bytes, over {MAX_COMMIT_BYTES}")
    obj = sizes.object(oid) if sizes is not None else store[oid]
    if not isinstance(obj, Commit):
        raise UnsafeTreeError(f"{sha} is a {obj.type_name.decode()}, not a commit")
    return _keep_commit(sha, obj)


def _keep_commit(sha: str, obj: Commit) -> tuple[CommitInfo, ObjectID]:
    """Commit ``sha`` (size-checked, parsed) as ``read_commit`` gives it, kept."""
    signed = split_commit(obj.as_raw_string())
    summary = obj.message.split(b"\n", 1)[0].decode("utf-8", "replace")
    parents = tuple(p.decode() for p in obj.parents)
    info = CommitInfo(sha, signed.payload, signed.signature, obj.commit_time, parents, summary, signed.noncanonical)
    _READ[sha] = info, obj.tree
    if len(_READ) > KEPT_COMMITS:
        _READ.popitem(last=False)
    return info, obj.tree


_READ: OrderedDict[str, tuple[CommitInfo, ObjectID]] = OrderedDict()  # most recently read last


def check_connected(store: DiskObjectStore, known: Callable[[ObjectID], bool], tip: ObjectID) -> str | None:
    """Check that everything ``tip`` reaches is in ``store``, or in the
    complete store behind it (objects ``known``); return the first missing
    object, described, or None.  Blobs are checked for presence, never read;
    commits and trees are size-checked before they are read.

    Each new commit's tree is compared with its first parent's
    (``commitdiff``: the same diff the pass's history then reads back): only
    the entries that differ are followed, since the parent's tree is itself
    complete (in the store behind, when ``known`` is ``KnownIds``, and read
    from there; or new, and checked here the same way; a root commit's tree
    is walked whole), so a commit costs what it changes, not the size of its
    tree."""
    behind = ObjectSizes(known.store) if isinstance(known, KnownIds) else None
    sizes = ObjectSizes(store)
    try:
        commits: dict[ObjectID, Commit] = {}
        missing = _new_commits(sizes, known, tip, commits)
        if missing is not None:
            return missing
        trees = Trees(_tree_reader(sizes, behind))
        for oid in reversed(commits):  # parents first: each tree is derived from its parent's, just parsed
            parent = _parent_tree(commits, behind, commits[oid])
            missing = _new_objects(trees, sizes, known, oid, parent, commits[oid].tree)
            if missing is not None:
                return missing
    finally:
        sizes.close()
        if behind is not None:
            behind.close()
    return None


def _new_commits(
    sizes: ObjectSizes, known: Callable[[ObjectID], bool], tip: ObjectID, commits: dict[ObjectID, Commit]
) -> str | None:
    """Read into ``commits`` every commit ``tip`` reaches that is not
    ``known`` (tip first); the first missing or malformed one, described."""
    pending = [(tip, "the tip")]
    while pending:
        oid, what = pending.pop()
        if oid in commits or known(oid):
            continue
        if not sizes.has(oid):
            return f"commit {oid.decode()} ({what}) is missing"
        if sizes(oid) > MAX_COMMIT_BYTES:
            raise UnsafeTreeError(f"commit {oid.decode()} is over {MAX_COMMIT_BYTES} bytes")
        try:
            obj = sizes.object(oid)
        except ObjectFormatException as exc:  # packs are indexed unparsed (packindex): parsed here, first
            return f"commit {oid.decode()} ({what}) does not parse: {exc}"
        if not isinstance(obj, Commit):
            return f"{oid.decode()} ({what}) is a {obj.type_name.decode()}, not a commit"
        commits[oid] = obj
        _keep_commit(oid.decode(), obj)  # for the pass's history
        pending.extend((p, f"parent of {oid.decode()[:12]}") for p in reversed(obj.parents))
    return None


def _parent_tree(commits: dict[ObjectID, Commit], behind: ObjectSizes | None, commit: Commit) -> ObjectID | None:
    """The root tree of ``commit``'s first parent: a new commit's, or one
    from the complete store behind; None for a root commit (or a parent
    that cannot be read: the tree is then walked whole)."""
    if not commit.parents:
        return None
    parent = commits.get(commit.parents[0])
    if parent is None and behind is not None:
        try:
            found = behind.object(commit.parents[0])
        except KeyError:
            return None
        parent = found if isinstance(found, Commit) else None
    return parent.tree if parent is not None else None


def _new_objects(
    trees: Trees,
    sizes: ObjectSizes,
    known: Callable[[ObjectID], bool],
    oid: ObjectID,
    parent: ObjectID | None,
    tree: ObjectID,
) -> str | None:
    """Diff commit ``oid`` against its first parent's tree (``commit_diff``,
    computed afresh: a diff kept from another store proves nothing about
    this one) and check each blob it adds; the first object missing or
    malformed, described."""
    commit = oid.decode()[:12]
    try:
        diff = commit_diff(trees, oid, parent, tree, fresh=True)
    except MissingTreeError as exc:
        where = f"root tree of {commit}" if not exc.path else f"{exc.path} in {commit}"
        return f"tree {exc.oid.decode()} ({where}) is missing"
    except NotATreeError as exc:
        return f"{exc.oid.decode()} (a tree of {commit}) is a {exc.kind}, not a tree"
    except ObjectFormatException as exc:  # packs are indexed unparsed (packindex): parsed here, first
        return f"a tree of commit {commit} (the root tree of {commit} or one under it) does not parse: {exc}"
    for path, entry in diff.entries.items():
        if entry is None or entry[0] == SUBMODULE_MODE:
            continue  # removed; or a gitlink, which names a commit of another repository
        if not known(entry[1]) and not sizes.has(entry[1]):
            return f"blob {entry[1].decode()} ({path} in {commit}) is missing"
    return None


class NotATreeError(UnsafeTreeError):
    """An object named as a tree is something else."""

    def __init__(self, oid: ObjectID, type_num: int) -> None:
        self.oid = oid
        self.kind = {1: "commit", 3: "blob", 4: "tag"}.get(type_num, f"object of type {type_num}")
        super().__init__(f"{oid.decode()} is a {self.kind}, not a tree")


def raw_tree_reader(sizes: ObjectSizes) -> RawTree:
    """A tree's raw bytes from ``sizes``' store, its size checked (from its
    header) first; a missing object raises ``MissingTreeError``, a
    ``KeyError`` (damage: the caller judges)."""

    def raw(tree: ObjectID) -> bytes:
        try:
            size = sizes(tree)
        except KeyError:
            raise MissingTreeError(tree) from None
        if size > MAX_TREE_BYTES:
            raise UnsafeTreeError(f"tree {tree.decode()} is {size} bytes, over {MAX_TREE_BYTES}")
        kind, data = sizes.raw(tree)
        if kind != Tree.type_num:
            raise NotATreeError(tree, kind)
        return data

    return raw


def _tree_reader(sizes: ObjectSizes, behind: ObjectSizes | None) -> RawTree:
    """``raw_tree_reader`` of ``sizes``' store, then of the store behind it."""
    first = raw_tree_reader(sizes)
    if behind is None:
        return first
    second = raw_tree_reader(behind)

    def raw(tree: ObjectID) -> bytes:
        try:
            return first(tree)
        except MissingTreeError:
            return second(tree)

    return raw


def nothing_known(_oid: ObjectID) -> bool:
    return False


def blob_id(data: bytes) -> ObjectID:
    """git's id for a blob with this content (``plan.blob_id``, as dulwich spells ids)."""
    return ObjectID(plan_blob_id(data).encode())


# --- object sizes from headers ------------------------------------------------------


def object_id(sha: str) -> ObjectID:
    return ObjectID(sha.encode("ascii"))


class ObjectSizes:
    """Object sizes read from headers, with the pack list and pack files
    opened once (a hosts tree has one blob per node)."""

    def __init__(self, store: DiskObjectStore) -> None:
        self.store = store
        self.packs = list(store.packs)  # dulwich rescans the pack directory on each access
        self.files: dict[str, BinaryIO] = {}
        self.lookups = 0
        self.offsets: list[dict[bytes, int]] | None = None  # of each pack, once looked up often

    def _find(self, sha: ObjectID) -> tuple[Pack, int] | None:
        """The pack holding ``sha`` and its offset there.  dulwich bisects
        the index in Python for each id; after ``MAPPED_AFTER`` lookups,
        every pack index is read into a map once (``packscan.index_offsets``)."""
        if self.offsets is None:
            self.lookups += 1
            if self.lookups > MAPPED_AFTER:
                self.offsets = [
                    index_offsets(Path(pack.data.path).with_suffix(".idx").read_bytes()) for pack in self.packs
                ]
        if self.offsets is not None:
            for pack, offsets in zip(self.packs, self.offsets, strict=True):
                offset = offsets.get(sha)
                if offset is not None:
                    return pack, offset
            return None
        for pack in self.packs:
            try:
                return pack, pack.index.object_offset(sha)
            except KeyError:
                continue
        return None

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()
        self.files.clear()

    def __call__(self, sha: ObjectID) -> int:
        """The size of an object's content, read from its header only.

        Packed objects: see ``packscan.packed_size``; loose objects start
        with ``"<type> <size>\\0"`` (zlib).  At most a few dozen bytes are
        inflated, whatever the object's size.  An object in none of the packs
        listed at the start looks again in the packs there are now (one
        kept for a whole pass sees a pack moved in meanwhile)."""
        try:
            return self._size(sha)
        except KeyError:
            packs = list(self.store.packs)
            if [p.data.path for p in packs] == [p.data.path for p in self.packs]:
                raise
            self.packs, self.offsets, self.lookups = packs, None, 0
            return self._size(sha)

    def _size(self, sha: ObjectID) -> int:
        found = self._find(sha)
        if found is not None:
            pack, offset = found
            path = os.fspath(pack.data.path)
            fh = self.files.get(path)
            if fh is None:
                fh = self.files[path] = open(path, "rb")  # noqa: SIM115 (closed in close())
            fh.seek(offset)
            try:
                return packed_size(fh)
            except PackFormatError:
                raise UnsafeTreeError(f"object {sha.decode()} has a corrupt header") from None
        path = hex_to_filename(os.fspath(self.store.path), sha)
        try:
            with open(path, "rb") as loose:
                head = inflate_prefix(loose, 64)
            return int(head.split(b"\0", 1)[0].split(b" ", 1)[1])
        except FileNotFoundError:
            for alternate in self.store.alternates:  # a quarantine reads through to the store
                if isinstance(alternate, DiskObjectStore) and sha in alternate:
                    return object_size(alternate, sha)
            raise KeyError(sha) from None
        except (ValueError, IndexError, zlib.error):
            raise UnsafeTreeError(f"object {sha.decode()} has a corrupt header") from None

    def read(self, sha: ObjectID) -> bytes:
        """An object's content (``raw``)."""
        return self.raw(sha)[1]

    def raw(self, sha: ObjectID) -> tuple[int, bytes]:
        """An object's type number and content, from the packs listed once
        (dulwich lists the pack directory again on each lookup), else from
        the store."""
        found = self._find(sha)
        if found is None:
            return self.store.get_raw(sha)
        pack, offset = found
        kind, obj = pack.data.get_object_at(offset)
        kind, chunks = pack.resolve_object(offset, kind, obj)  # a delta's base: in the same pack
        return kind, b"".join(cast(list[bytes], chunks))

    def has(self, sha: ObjectID) -> bool:
        """Whether the store holds an object (the packs listed once first)."""
        return self._find(sha) is not None or sha in self.store

    def object(self, sha: ObjectID) -> ShaFile:
        """An object parsed (``raw``)."""
        return ShaFile.from_raw_string(*self.raw(sha), sha=sha)


def object_size(store: DiskObjectStore, sha: ObjectID) -> int:
    sizes = ObjectSizes(store)
    try:
        return sizes(sha)
    finally:
        sizes.close()


class KnownIds:
    """Membership in a complete ``store``, fast: the ids of its pack indexes
    read into a set once (a hosts tree names 10k blobs), loose objects by
    path.  ``check_connected`` also reads from ``store`` the trees of the
    commits it holds, to compare new commits with."""

    def __init__(self, store: DiskObjectStore) -> None:
        self.store = store
        self.ids: set[bytes] = set()
        for index in Path(store.pack_dir).glob("pack-*.idx"):
            self.ids |= index_object_ids(index.read_bytes())
        self.base = os.fspath(store.path)

    def __call__(self, oid: ObjectID) -> bool:
        return oid in self.ids or os.path.exists(hex_to_filename(self.base, oid))  # noqa: PTH110 (a path object per id costs)


def known_ids(store: DiskObjectStore) -> KnownIds:
    """``KnownIds`` of ``store``."""
    return KnownIds(store)


def complete(store: DiskObjectStore, heads: Sequence[ObjectID]) -> bool:
    """Whether every object ``heads`` reach is in ``store`` (a full walk:
    only for telling a damaged store from a lying server)."""
    try:
        return all(check_connected(store, nothing_known, head) is None for head in heads)
    except (KeyError, zlib.error, ValueError, AssertionError, OSError):
        return False
