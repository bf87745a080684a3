"""A received pack indexed into a store, its objects' ids computed from their
bytes, none parsed.

dulwich's ``add_thin_pack`` indexes a pack the same way and then builds a
parsed object of every object in it, to refuse one that does not parse:
for 1,000 commits of a 10,000-node network that is 2,000 trees of 10,000
entries, parsed whole (most of a fetch's time).  syncd never uses an object
it has not read with its own limits and parser (``objects.commit_info``,
``treediff``: a tree that does not parse is refused there), so the pack is
only indexed: each object inflated once, deltas resolved (a thin pack's
bases from the store behind the quarantine, appended to the pack as git's
``index-pack --fix-thin`` does), the pack's checksum verified.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from dulwich.object_store import DiskObjectStore
from dulwich.pack import PackData, PackIndexer, PackStreamCopier, extend_pack, write_pack_index

PACK_MODE = 0o444  # as git and dulwich leave a pack


def add_pack(store: DiskObjectStore, read_all: Callable[[int], bytes]) -> None:
    """Copy the pack ``read_all`` reads into ``store``'s pack directory, with
    its index.  Raises what dulwich raises for a bad pack (a checksum that
    does not match, a delta whose base is nowhere: ``KeyError``); then
    nothing is left in the store."""
    fmt = store.object_format
    fd, name = tempfile.mkstemp(dir=os.fspath(store.path), prefix="tmp_pack_")
    path = Path(name)
    try:
        with os.fdopen(fd, "w+b") as pack:
            path.chmod(PACK_MODE)
            indexer = PackIndexer(pack, fmt.hash_func, resolve_ext_ref=store.get_raw)
            copier = PackStreamCopier(fmt.hash_func, read_all, None, pack, delta_iter=indexer)  # type: ignore[arg-type]
            copier.verify()
            pack.flush()
            pack.seek(0)
            with PackData(name, file=pack, object_format=fmt) as data:
                indexer.set_pack_data(data)
                entries = list(indexer)
                bases = set(indexer.ext_refs())
            checksum, appended = extend_pack(pack, bases, get_raw=store.get_raw, object_format=fmt)
            pack.flush()
        entries.extend(appended)
        entries.sort()
        base = store._get_pack_basepath(entries)
        index = Path(base + ".idx.tmp")
        with index.open("wb") as fh:
            write_pack_index(fh, entries, checksum)
        path.rename(base + ".pack")
        index.rename(base + ".idx")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
