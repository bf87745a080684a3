"""git objects read without trusting them (dulwich): a commit split as git
splits it, kinds of tree entries, the connectivity of new objects, and object
sizes from their headers (nothing is inflated whole to learn its size)."""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from dulwich.errors import ObjectFormatException
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit, ObjectID, ShaFile, Tree, hex_to_filename, hex_to_sha

from syncd.errors import UnsafeTreeError
from syncd.git.packscan import PackFormatError, index_object_ids, inflate_prefix, packed_size
from syncd.git.treediff import RawTree, Trees
from syncd.rules.plan import blob_id as plan_blob_id
from syncd.rules.tree import EntryKind
from syncd.signing.commits import CommitInfo, split_commit

MAX_COMMIT_BYTES = 1 << 20  # a commit (with its signature) larger than this is refused
MAX_TREE_BYTES = 64 << 20  # 100k entries of ~40 bytes fit easily
SUBMODULE_MODE = 0o160000


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
    """``commit_info``, and the id of the commit's root tree."""
    oid = object_id(sha)
    size = sizes(oid) if sizes is not None else object_size(store, oid)
    if size > MAX_COMMIT_BYTES:
        raise UnsafeTreeError(f"commit {sha} is {size} bytes, over {MAX_COMMIT_BYTES}")
    obj = sizes.object(oid) if sizes is not None else store[oid]
    if not isinstance(obj, Commit):
        raise UnsafeTreeError(f"{sha} is a {obj.type_name.decode()}, not a commit")
    signed = split_commit(obj.as_raw_string())
    summary = obj.message.split(b"\n", 1)[0].decode("utf-8", "replace")
    parents = tuple(p.decode() for p in obj.parents)
    info = CommitInfo(sha, signed.payload, signed.signature, obj.commit_time, parents, summary, signed.noncanonical)
    return info, obj.tree


Changes = Iterator[tuple[str, ObjectID | None]]


def diff_trees(trees: Trees, old: ObjectID | None, new: ObjectID | None) -> Changes:
    """Every path whose entry differs between two trees, with the blob it names in
    ``new`` (None: removed, or a submodule's commit); identical subtrees are
    skipped unread, and a tree is compared with its old self on its raw
    bytes (``treediff``): only the entries that differ are parsed."""
    yield from _diff(trees, old, new, "")


def _diff(trees: Trees, old: ObjectID | None, new: ObjectID | None, prefix: str) -> Changes:
    for name, (a, b) in trees.diff(old, new).items():
        a_dir = a is not None and stat.S_ISDIR(a[0])
        b_dir = b is not None and stat.S_ISDIR(b[0])
        if a_dir or b_dir:
            yield from _diff(trees, a[1] if a and a_dir else None, b[1] if b and b_dir else None, f"{prefix}{name}/")
        if b is not None and not b_dir:
            yield prefix + name, None if b[0] == SUBMODULE_MODE else b[1]
        elif a is not None and not a_dir:
            yield prefix + name, None


Pending = tuple[ObjectID, str, str, ObjectID | None]  # object, kind, what, a complete tree to compare it with


def check_connected(store: DiskObjectStore, known: Callable[[ObjectID], bool], tip: ObjectID) -> str | None:
    """Walk everything ``tip`` reaches in ``store``, skipping objects in
    those ``known`` (complete by the store's invariant); return the first missing
    object, described, or None.  Blobs are checked for presence, never read;
    commits and trees are size-checked before they are read.

    A commit's tree is compared with its first parent's (``treediff``):
    only the entries that differ are followed, since the parent's tree is
    itself complete (known, or walked here), so a commit costs what it
    changes, not the size of its tree."""
    seen: set[ObjectID] = set()
    pending: list[Pending] = [(tip, "commit", "the tip", None)]
    sizes = ObjectSizes(store)
    trees = Trees(raw_tree_reader(store, sizes))
    commits: dict[ObjectID, ShaFile] = {}  # a parent is read for its tree, then walked: read once
    try:
        while pending:
            oid, kind, what, like = pending.pop()
            if oid in seen or known(oid):
                continue
            seen.add(oid)
            if not sizes.has(oid):
                return f"{kind} {oid.decode()} ({what}) is missing"
            if kind == "blob":
                continue
            if kind == "tree":
                pending.extend(_new_entries(trees, sizes, like, oid))
                continue
            if sizes(oid) > MAX_COMMIT_BYTES:
                raise UnsafeTreeError(f"{kind} {oid.decode()} is over {MAX_COMMIT_BYTES} bytes")
            obj = commits.pop(oid, None) or sizes.object(oid)
            if not isinstance(obj, Commit):
                return f"{oid.decode()} ({what}) is a {obj.type_name.decode()}, not a {kind}"
            like = _tree_of(sizes, obj.parents, commits)
            pending.append((obj.tree, "tree", f"root tree of {oid.decode()[:12]}", like))
            pending.extend((p, "commit", f"parent of {oid.decode()[:12]}", None) for p in obj.parents)
    except NotATreeError as exc:
        return f"{exc.oid.decode()} ({what}) is a {exc.kind}, not a tree"
    except ObjectFormatException as exc:  # packs are indexed unparsed (packindex): parsed here, first
        return f"{kind} {oid.decode()} ({what}) does not parse: {exc}"
    finally:
        sizes.close()
    return None


def _tree_of(sizes: ObjectSizes, parents: Sequence[ObjectID], read: dict[ObjectID, ShaFile]) -> ObjectID | None:
    """The root tree of the first parent, when it is there to compare with
    (the parent kept in ``read``, for its own turn in the walk)."""
    if not parents:
        return None
    try:
        parent = read[parents[0]] = sizes.object(parents[0])
    except KeyError:
        return None
    return parent.tree if isinstance(parent, Commit) else None


def _new_entries(trees: Trees, sizes: ObjectSizes, like: ObjectID | None, tree: ObjectID) -> Iterator[Pending]:
    """The entries of ``tree`` to follow: those not the same in ``like``
    (None, or not there: all), each with its counterpart in ``like`` when
    both are trees."""
    changed = trees.diff(like if like is not None and sizes.has(like) else None, tree)
    for name, (before, entry) in changed.items():
        if entry is None or entry[0] == SUBMODULE_MODE:
            continue  # removed; or a gitlink, which names a commit of another repository
        mode, child = entry
        if stat.S_ISDIR(mode):
            counterpart = before[1] if before is not None and stat.S_ISDIR(before[0]) else None
            yield child, "tree", name, counterpart
        else:
            yield child, "blob", name, None


class NotATreeError(UnsafeTreeError):
    """An object named as a tree is something else."""

    def __init__(self, oid: ObjectID, type_num: int) -> None:
        self.oid = oid
        self.kind = {1: "commit", 3: "blob", 4: "tag"}.get(type_num, f"object of type {type_num}")
        super().__init__(f"{oid.decode()} is a {self.kind}, not a tree")


def raw_tree_reader(store: DiskObjectStore, sizes: ObjectSizes) -> RawTree:
    """A tree's raw bytes from ``store``, its size checked (from its header,
    by ``sizes``) first; a missing object raises KeyError (damage: the
    caller judges)."""

    def raw(tree: ObjectID) -> bytes:
        size = sizes(tree)
        if size > MAX_TREE_BYTES:
            raise UnsafeTreeError(f"tree {tree.decode()} is {size} bytes, over {MAX_TREE_BYTES}")
        kind, data = sizes.raw(tree)
        if kind != Tree.type_num:
            raise NotATreeError(tree, kind)
        return data

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
            self.packs = packs
            return self._size(sha)

    def _size(self, sha: ObjectID) -> int:
        for pack in self.packs:
            try:
                offset = pack.index.object_offset(sha)
            except KeyError:
                continue
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
        binsha = hex_to_sha(sha)
        for pack in self.packs:
            try:
                return pack.get_raw(binsha)
            except KeyError:
                continue
        return self.store.get_raw(sha)

    def has(self, sha: ObjectID) -> bool:
        """Whether the store holds an object (the packs listed once first)."""
        binsha = hex_to_sha(sha)
        for pack in self.packs:
            try:
                pack.index.object_offset(binsha)
            except KeyError:
                continue
            return True
        return sha in self.store

    def object(self, sha: ObjectID) -> ShaFile:
        """An object parsed (``raw``)."""
        return ShaFile.from_raw_string(*self.raw(sha), sha=sha)


def object_size(store: DiskObjectStore, sha: ObjectID) -> int:
    sizes = ObjectSizes(store)
    try:
        return sizes(sha)
    finally:
        sizes.close()


def known_ids(store: DiskObjectStore) -> Callable[[ObjectID], bool]:
    """Membership in ``store``, fast: the ids of its pack indexes read into
    a set once (a hosts tree names 10k blobs), loose objects by path."""
    ids: set[bytes] = set()
    for index in Path(store.pack_dir).glob("pack-*.idx"):
        ids |= index_object_ids(index.read_bytes())
    base = os.fspath(store.path)

    def known(oid: ObjectID) -> bool:
        return oid in ids or os.path.exists(hex_to_filename(base, oid))  # noqa: PTH110 (a path object per id costs)

    return known


def complete(store: DiskObjectStore, heads: Sequence[ObjectID]) -> bool:
    """Whether every object ``heads`` reach is in ``store`` (a full walk:
    only for telling a damaged store from a lying server)."""
    try:
        return all(check_connected(store, nothing_known, head) is None for head in heads)
    except (KeyError, zlib.error, ValueError, AssertionError, OSError):
        return False
