"""The shared repository, fetched with dulwich (the only module importing it).

The remote and every mirror are untrusted.  Fetching only adds objects to
``state_dir/repo.git``; nothing is ever deleted from it.  syncd keeps two
local refs, both under ``refs/heads/`` because that is where a fetch looks
for what it already has (so only new objects cross the network):

* ``refs/heads/syncd-applied``: the last commit installed.  It moves only
  when syncd applies a commit, so a force-push on the server can change what
  the remote *offers* but never rewinds what this node applied (the
  rollback guard itself reads the last applied commit from the state file);
* ``refs/heads/syncd-fetched``: whatever the remote offered last, trusted
  for nothing, so that a refused commit is not downloaded again and again.

Full history is fetched (no shallow clone): the rollback guard walks it.

Everything read from the store is bounded before it is read: commit and
tree objects by a fixed cap, host-file blobs by the policy's
``max_file_bytes``, the hosts directory by ``max_files`` entries.  Sizes are
taken from the object headers (``object_size``) without inflating the body.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dulwich.client import get_transport_and_path
from dulwich.config import ConfigDict
from dulwich.errors import NotTreeError
from dulwich.object_store import DiskObjectStore, tree_lookup_path
from dulwich.objects import Commit, ObjectID, Tree, hex_to_filename
from dulwich.refs import Ref
from dulwich.repo import Repo

from syncd.config import redact_url
from syncd.errors import TransientError, UnsafeTreeError
from syncd.policy import POLICY_FILE
from syncd.validate import EntryKind, TreeEntry

APPLIED_REF = Ref(b"refs/heads/syncd-applied")
FETCHED_REF = Ref(b"refs/heads/syncd-fetched")
MAX_COMMIT_BYTES = 1 << 20  # a commit (with its signature) larger than this is refused
MAX_TREE_BYTES = 64 << 20  # 100k entries of ~40 bytes fit easily
MAX_POLICY_BYTES = 1 << 20
SUBMODULE_MODE = 0o160000


@dataclass(frozen=True, slots=True)
class CommitInfo:
    sha: str
    payload: bytes  # the commit without its gpgsig header: what was signed
    signature: bytes | None
    committer_time: int
    parents: tuple[str, ...]
    summary: str


class GitStore:
    """``state_dir/repo.git``: a bare repository only syncd writes to.

    Open it only while holding the network's lock (``apply.locked``): it
    then clears what a crashed run may have left behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if (path / "objects").is_dir():
            _clear_stale_locks(path)
            self.repo = Repo(str(path))
        else:
            path.mkdir(parents=True, exist_ok=True)
            self.repo = Repo.init_bare(str(path))
        store = self.repo.object_store
        assert isinstance(store, DiskObjectStore)
        self.store: DiskObjectStore = store

    def close(self) -> None:
        self.repo.close()

    # --- fetching ---------------------------------------------------------------

    def fetch(
        self,
        urls: Sequence[str],
        branch: str,
        ssh_command: str | None = None,
        ca_file: Path | None = None,
    ) -> tuple[str, str]:
        """Fetch ``branch`` from the first URL that answers.

        Returns ``(tip, redacted url)``.  Raises ``TransientError`` naming
        every URL (without secrets) and why it failed.
        """
        ref = Ref(f"refs/heads/{branch}".encode())
        failures = []
        for url in urls:
            try:
                return self._fetch_one(url, ref, ssh_command, ca_file), redact_url(url)
            except TransientError as exc:
                failures.append(f"{redact_url(url)}: {exc.message}")
            except Exception as exc:  # dulwich raises many kinds for network trouble
                failures.append(f"{redact_url(url)}: {type(exc).__name__}: {_one_line(exc, url)}")
        raise TransientError("no repository URL could be fetched: " + "; ".join(failures))

    def _fetch_one(self, url: str, ref: Ref, ssh_command: str | None, ca_file: Path | None) -> str:
        settings = ConfigDict()
        if ca_file is not None:  # https:// with a private CA: git's http.sslCAInfo
            settings.set((b"http",), b"sslCAInfo", os.fsencode(ca_file))
        client, path = get_transport_and_path(url, config=settings, ssh_command=ssh_command, quiet=True)
        found: dict[str, ObjectID] = {}

        def wants(refs: Mapping[Ref, ObjectID], depth: int | None = None) -> list[ObjectID]:
            tip = refs.get(ref)
            if tip is None:
                raise TransientError(f"the remote has no branch {ref.decode()}")
            found["tip"] = tip
            return [] if tip in self.store else [tip]

        client.fetch(path, self.repo, determine_wants=wants, ref_prefix=[ref])
        if "tip" not in found:
            raise TransientError(f"the remote has no branch {ref.decode()}")
        tip = found["tip"]
        if tip not in self.store:
            raise TransientError(f"the remote did not send commit {tip.decode()}")
        self.repo.refs[FETCHED_REF] = tip
        return tip.decode()

    # --- history ------------------------------------------------------------------

    def has(self, sha: str) -> bool:
        return _oid(sha) in self.store

    def commit(self, sha: str) -> CommitInfo:
        size = object_size(self.store, _oid(sha))
        if size > MAX_COMMIT_BYTES:
            raise UnsafeTreeError(f"commit {sha} is {size} bytes, over {MAX_COMMIT_BYTES}")
        obj = self.store[_oid(sha)]
        if not isinstance(obj, Commit):
            raise UnsafeTreeError(f"{sha} is a {obj.type_name.decode()}, not a commit")
        payload, signature, _ = obj.extract_signature()
        summary = obj.message.split(b"\n", 1)[0].decode("utf-8", "replace")
        return CommitInfo(
            sha,
            payload,
            signature,
            obj.commit_time,
            tuple(p.decode() for p in obj.parents),
            summary,
        )

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
        return any(info.sha == ancestor for info in self._walk(descendant, set()))

    def pin_applied(self, sha: str) -> None:
        """Keep the applied commit referenced in the store (see module doc)."""
        self.repo.refs[APPLIED_REF] = _oid(sha)

    # --- trees ----------------------------------------------------------------------

    def read_policy(self, commit_sha: str) -> bytes | None:
        root = self._root_tree(commit_sha)
        try:
            mode, sha = root[POLICY_FILE.encode()]
        except KeyError:
            return None
        if not stat.S_ISREG(mode):
            raise UnsafeTreeError(f"{POLICY_FILE} in commit {commit_sha[:12]} is not a regular file")
        return self._read_blob(sha, MAX_POLICY_BYTES, POLICY_FILE)

    def read_hosts(
        self,
        commit_sha: str,
        hosts_dir: str,
        max_files: int,
        max_file_bytes: int,
        reuse: Callable[[str], bytes | None] | None = None,
    ) -> list[TreeEntry]:
        """The entries of ``hosts_dir``: kinds and sizes are checked before any
        blob is read; blobs over ``max_file_bytes`` are never read.

        ``reuse(name)`` may offer bytes already at hand (the installed file);
        they are used only if their git blob id is the tree's, which binds
        them to the signed commit as firmly as the store's copy.
        """
        root = self._root_tree(commit_sha)
        try:
            mode, sha = tree_lookup_path(self.store.__getitem__, root.id, hosts_dir.encode())
        except (KeyError, NotTreeError):
            raise UnsafeTreeError(f"commit {commit_sha[:12]} has no directory {hosts_dir}/") from None
        if not stat.S_ISDIR(mode):
            raise UnsafeTreeError(f"{hosts_dir} in commit {commit_sha[:12]} is not a directory")
        tree = self._tree(sha, f"{hosts_dir}/")
        if len(tree) > max_files:
            raise UnsafeTreeError(
                f"{hosts_dir}/ in commit {commit_sha[:12]} has {len(tree)} entries, over the policy's "
                f"max_files ({max_files}); nothing was read"
            )
        entries = []
        sizes = ObjectSizes(self.store)
        try:
            for item in tree.iteritems():
                name = item.path.decode("utf-8", "replace")
                mode = item.mode
                if mode == SUBMODULE_MODE:
                    entries.append(TreeEntry(name, EntryKind.SUBMODULE, 0, None))
                elif stat.S_ISLNK(mode):
                    entries.append(TreeEntry(name, EntryKind.SYMLINK, 0, None))
                elif stat.S_ISDIR(mode):
                    entries.append(TreeEntry(name, EntryKind.DIRECTORY, 0, None))
                elif stat.S_ISREG(mode):
                    data = reuse(name) if reuse is not None else None
                    if data is not None and len(data) <= max_file_bytes and blob_id(data) == item.sha:
                        entries.append(TreeEntry(name, EntryKind.FILE, len(data), data))
                        continue
                    size = sizes(item.sha)
                    data = self.store[item.sha].as_raw_string() if size <= max_file_bytes else None
                    entries.append(TreeEntry(name, EntryKind.FILE, size, data))
                else:
                    entries.append(TreeEntry(name, EntryKind.OTHER, 0, None))
        finally:
            sizes.close()
        return entries

    def _root_tree(self, commit_sha: str) -> Tree:
        info = self.store[_oid(commit_sha)]
        assert isinstance(info, Commit)
        return self._tree(info.tree, "the root tree")

    def _tree(self, sha: ObjectID, what: str) -> Tree:
        size = object_size(self.store, sha)
        if size > MAX_TREE_BYTES:
            raise UnsafeTreeError(f"{what} is {size} bytes, over {MAX_TREE_BYTES}")
        tree = self.store[sha]
        if not isinstance(tree, Tree):
            raise UnsafeTreeError(f"{what} is not a tree")
        return tree

    def _read_blob(self, sha: ObjectID, limit: int, what: str) -> bytes:
        size = object_size(self.store, sha)
        if size > limit:
            raise UnsafeTreeError(f"{what} is {size} bytes, over {limit}")
        return self.store[sha].as_raw_string()


def blob_id(data: bytes) -> ObjectID:
    """git's id for a blob with this content."""
    return ObjectID(hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest().encode())


def _clear_stale_locks(path: Path) -> None:
    """Ref lock files (``*.lock``) of a run that died while writing a ref.

    dulwich would refuse to write that ref ever again.  Only syncd writes
    this repository, and the caller holds the network's lock, so any lock
    file here is stale."""
    for lock in [*path.glob("refs/**/*.lock"), *path.glob("*.lock")]:
        lock.unlink(missing_ok=True)


def _one_line(exc: BaseException, url: str) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return message.replace(url, redact_url(url))[:300]


# --- object sizes from headers ------------------------------------------------------

_OFS_DELTA, _REF_DELTA = 6, 7


def _oid(sha: str) -> ObjectID:
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

        Packed objects start with a type-and-size varint, and for deltas the
        result size is the second varint at the start of the (zlib) delta;
        loose objects start with ``"<type> <size>\\0"`` (zlib).  At most a few
        dozen bytes are inflated, whatever the object's size."""
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
            return _packed_size(fh, sha)
        path = hex_to_filename(os.fspath(self.store.path), sha)
        try:
            with open(path, "rb") as loose:
                head = _inflate_prefix(loose, 64)
            return int(head.split(b"\0", 1)[0].split(b" ", 1)[1])
        except FileNotFoundError:
            raise KeyError(sha) from None
        except (ValueError, IndexError, zlib.error):
            raise UnsafeTreeError(f"object {sha.decode()} has a corrupt header") from None


def object_size(store: DiskObjectStore, sha: ObjectID) -> int:
    sizes = ObjectSizes(store)
    try:
        return sizes(sha)
    finally:
        sizes.close()


def _packed_size(fh: BinaryIO, sha: ObjectID) -> int:
    read = fh.read
    byte = read(1)[0]
    kind = (byte >> 4) & 7
    size = byte & 0x0F
    shift = 4
    while byte & 0x80:
        byte = read(1)[0]
        size |= (byte & 0x7F) << shift
        shift += 7
    if kind not in (_OFS_DELTA, _REF_DELTA):
        return size
    if kind == _OFS_DELTA:
        byte = read(1)[0]
        while byte & 0x80:
            byte = read(1)[0]
    else:
        read(20)
    delta_head = _inflate_prefix(fh, 20)
    _, pos = _varint(delta_head, 0)  # base size
    result, _ = _varint(delta_head, pos)
    return result


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _inflate_prefix(fh: BinaryIO, want: int) -> bytes:
    """Inflate only the first ``want`` bytes of the zlib stream at ``fh``."""
    read = fh.read
    inflater = zlib.decompressobj()
    out = b""
    while len(out) < want:
        chunk = read(256)
        if not chunk:
            break
        out += inflater.decompress(chunk, want - len(out))
        if inflater.eof:
            break
    return out
