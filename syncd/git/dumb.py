"""Fetching from a static mirror ("dumb" HTTP): a plain web server or object
store serving a bare repository after ``git update-server-info``.

Such a server cannot compute what a node lacks, so the node walks the new
history itself, as git's own dumb HTTP walker does: from the advertised tip,
down through commits, trees and tags, it asks only for the objects its store
does not hold (a commit the store holds is complete, so the walk stops
there).  Each missing object is taken loose (``objects/xx/yyyy``) when the
server has it so; otherwise from the pack that the server's pack indexes
(``objects/info/packs``, ``objects/pack/*.idx``) say holds it, downloaded
whole.  A one-file change therefore costs its few new objects, not the
repository.

The mirror is untrusted like any server: every byte it sends counts against
``repo.max_fetch_bytes``; a loose object must hash to its name, and a pack
is checked against its own trailer and indexed by syncd (the server's index
only says which pack to download); a pack that lacks an object its index
lists, a truncated pack or a malformed index ends the fetch from that URL
with a ``FetchError`` before anything reaches the store.  Loose objects
are written to the quarantine (as a pack) whenever ``HELD`` of their bytes
are in memory: a loose object inflates to up to the cap from a few hundred
bytes sent, so holding them all would cost a multiple of the cap.
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Protocol

from dulwich.errors import ObjectFormatException
from dulwich.object_store import DiskObjectStore
from dulwich.objects import S_ISGITLINK, Commit, ObjectID, ShaFile, Tag, Tree, hex_to_sha, valid_hexsha
from dulwich.pack import PackIndex, load_pack_index_file

from syncd.errors import FetchError, FetchTooLargeError
from syncd.git.packscan import PackTooLargeError, scan_pack

LOOSE_TYPES = {b"blob": 3, b"tree": 2, b"commit": 1, b"tag": 4}
CHUNK = 64 << 10
HELD = 32 << 20  # loose objects' bytes held in memory before they are written to the quarantine as a pack


class Response(Protocol):
    status: int

    def close(self) -> None: ...


# (url, headers) -> (response, read): dulwich's HTTP client, with the node's
# CA file, proxy settings and the URL's credentials
HTTPGet = Callable[[str], tuple[Response, Callable[[int], bytes]]]


class StaticMirror:
    """The objects one new tip needs, from one static mirror, into a quarantine.

    ``count(n)`` is told of every byte received (it raises when the cap is
    passed); ``store`` is the node's store, ``incoming`` the quarantine (whose
    alternates point at the store)."""

    def __init__(
        self,
        base_url: str,
        get: HTTPGet,
        count: Callable[[int], None],
        max_object: int,
        store: DiskObjectStore,
        incoming: Path,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._get = get
        self._count = count
        self._max_object = max_object
        self._store = store
        self._incoming_path = incoming
        self._incoming = DiskObjectStore(os.fspath(incoming))
        self._indexes: dict[str, PackIndex] = {}  # server pack name -> its index, as fetched
        self._pack_names: list[str] | None = None  # objects/info/packs, once read
        self._downloaded: set[str] = set()
        self._loose: dict[ObjectID, ShaFile] = {}  # taken loose, not yet in the quarantine
        self._held = 0  # their bytes (inflated: a few compressed bytes can be a large object)

    def close(self) -> None:
        self._incoming.close()

    def fetch(self, tip: ObjectID) -> None:
        """Bring every object ``tip`` reaches that the store lacks into the quarantine."""
        pending: list[tuple[ObjectID, bool]] = [(tip, True)]  # (object, whether it may name others)
        seen: set[ObjectID] = set()
        while pending:
            sha, names_others = pending.pop()
            if sha in seen or sha in self._store:  # what the store holds, it holds with all it reaches
                continue
            seen.add(sha)
            if not names_others and (sha in self._loose or sha in self._incoming):  # a blob already here
                continue
            obj = self._object(sha)
            if isinstance(obj, Commit):
                pending += [(obj.tree, True), *((parent, True) for parent in obj.parents)]
            elif isinstance(obj, Tree):
                pending += [(e.sha, stat.S_ISDIR(e.mode)) for e in obj.iteritems() if not S_ISGITLINK(e.mode)]
            elif isinstance(obj, Tag):
                pending.append((obj.object[1], True))
        self._write_loose()

    def _write_loose(self) -> None:
        """The loose objects taken so far, into the quarantine as one pack."""
        if self._loose:
            self._incoming.add_objects([(obj, None) for obj in self._loose.values()])
        self._loose, self._held = {}, 0

    # --- one object -------------------------------------------------------------

    def _object(self, sha: ObjectID) -> ShaFile:
        if not valid_hexsha(sha):
            raise FetchError(f"the mirror's history names a malformed object id {sha!r}")
        if sha in self._loose:
            return self._loose[sha]
        if sha in self._incoming:
            return self._incoming[sha]
        name = self._held_by(sha, fetch_more=False)
        malformed: FetchError | None = None
        if name is None:
            try:
                obj = self._loose_object(sha)
            except FetchTooLargeError:
                raise
            except FetchError as exc:  # perhaps a web server's page for a missing file: try the packs
                obj, malformed = None, exc
            if obj is not None:
                self._loose[sha] = obj
                self._held += obj.raw_length()
                if self._held > HELD:
                    self._write_loose()
                return obj
            name = self._held_by(sha, fetch_more=True)
        if name is None and malformed is not None:
            raise malformed
        if name is None:
            raise FetchError(
                f"the mirror has no object {sha.decode()} (neither loose nor in a pack listed in objects/info/packs; "
                "run `git update-server-info` in the mirror's repository)"
            )
        self._download_pack(name)
        if sha not in self._incoming:
            raise FetchError(f"objects/pack/pack-{name}.idx lists {sha.decode()} but pack-{name}.pack does not hold it")
        return self._incoming[sha]

    def _loose_object(self, sha: ObjectID) -> ShaFile | None:
        hexsha = sha.decode()
        data = self._read(f"objects/{hexsha[:2]}/{hexsha[2:]}")
        if data is None:
            return None
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(data, self._max_object + 64)
            if inflater.unconsumed_tail:
                raise FetchTooLargeError(f"the mirror's loose object {hexsha} inflates past {self._max_object} bytes")
            header, _, body = raw.partition(b"\0")
            kind, _, size = header.partition(b" ")
            if kind not in LOOSE_TYPES or int(size) != len(body):
                raise ValueError("bad header")
            obj = ShaFile.from_raw_string(LOOSE_TYPES[kind], body)
        except (zlib.error, ValueError, ObjectFormatException) as exc:
            raise FetchError(f"the mirror's loose object {hexsha} is malformed ({exc})") from None
        if obj.id != sha:
            raise FetchError(f"the mirror's loose object {hexsha} holds {obj.id.decode()}")
        return obj

    # --- packs ------------------------------------------------------------------

    def _held_by(self, sha: ObjectID, fetch_more: bool) -> str | None:
        """The server pack whose index lists ``sha``: among the indexes
        already fetched, or (``fetch_more``) fetching the others in turn."""
        binsha = hex_to_sha(sha)
        for name, index in self._indexes.items():
            if _lists(index, binsha):
                return name
        if not fetch_more:
            return None
        for name in self._packs():
            if name in self._indexes:
                continue
            index = self._index(name)
            if _lists(index, binsha):
                return name
        return None

    def _packs(self) -> list[str]:
        if self._pack_names is None:
            listing = self._read("objects/info/packs") or b""
            names = []
            for line in listing.splitlines():
                word = line.split()[1] if line.startswith(b"P ") and len(line.split()) > 1 else b""
                stem = word.decode("ascii", "replace").removesuffix(".pack").removeprefix("pack-")
                if stem and all(c in "0123456789abcdef" for c in stem):  # a name, never a path
                    names.append(stem)
            self._pack_names = names
        return self._pack_names

    def _index(self, name: str) -> PackIndex:
        data = self._read(f"objects/pack/pack-{name}.idx")
        if data is None:
            raise FetchError(f"objects/info/packs lists pack-{name}.pack but its index is missing")
        try:
            index = load_pack_index_file(f"pack-{name}.idx", BytesIO(data), self._store.object_format)
            index.check()
        except Exception as exc:  # dulwich raises several kinds on a malformed index
            raise FetchError(f"the mirror's objects/pack/pack-{name}.idx is malformed ({exc})") from None
        self._indexes[name] = index
        return index

    def _download_pack(self, name: str) -> None:
        if name in self._downloaded:
            return
        self._downloaded.add(name)
        path = self._incoming_path / "pack" / f"download-{name}.pack"
        try:
            with open(path, "w+b") as out:
                if not self._read(f"objects/pack/pack-{name}.pack", out):
                    raise FetchError(f"objects/info/packs lists pack-{name}.pack but it is missing")
                out.seek(0)
                try:
                    scan_pack(out, self._max_object)
                    out.seek(0)
                    self._incoming.add_thin_pack(out.read, None)
                except PackTooLargeError:
                    raise
                except Exception as exc:  # a truncated or corrupt pack: dulwich raises several kinds
                    why = f"{type(exc).__name__}: {exc}"
                    raise FetchError(f"the mirror's pack-{name}.pack is damaged ({why})") from None
        finally:
            path.unlink(missing_ok=True)

    # --- HTTP -------------------------------------------------------------------

    def _read(self, path: str, out: BinaryIO | None = None) -> bytes | None:
        """GET ``path`` under the mirror: its body (into ``out`` when given,
        then b"x"); None when the server has no such file (404)."""
        url = self.base_url + path
        response, read = self._get(url)
        try:
            if response.status == 404:
                return None
            if response.status != 200:
                raise FetchError(f"{path}: the server answered HTTP {response.status}")
            chunks = []
            while chunk := read(CHUNK):
                self._count(len(chunk))
                if out is None:
                    chunks.append(chunk)
                else:
                    out.write(chunk)
            return b"".join(chunks) if out is None else b"x"
        finally:
            response.close()


def _lists(index: PackIndex, binsha: bytes) -> bool:
    try:
        index.object_offset(binsha)  # type: ignore[arg-type]
    except KeyError:
        return False
    return True
