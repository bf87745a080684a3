"""Read git pack data without trusting it: object sizes from headers, and a
bounded scan of a whole received pack (pure: bytes and file objects only).

A pack (git's Documentation/gitformat-pack.txt) is ``"PACK"``, a version
(2 or 3) and an object count, then per object a type-and-size varint, for a
delta its base (an offset varint or a 20-byte id), and a zlib stream; then a
20-byte SHA-1 trailer.  For a delta, the size in the header is the size of
the delta; the size of the object it builds is the second varint at the
start of the inflated delta.

Indexing a pack inflates each object whole, in memory.  A received pack is
therefore scanned first, inflating in small pieces and throwing the output
away, so that a small, highly compressed object that would inflate to a
gigabyte is refused before anything holds it (``scan_pack``).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import BinaryIO

OBJ_COMMIT, OBJ_TREE, OBJ_BLOB, OBJ_TAG, OFS_DELTA, REF_DELTA = 1, 2, 3, 4, 6, 7
_CHUNK = 64 << 10


class PackFormatError(ValueError):
    """The pack is malformed."""


class PackTooLargeError(PackFormatError):
    """An object in the pack is (or a delta builds one) larger than allowed."""


def packed_size(fh: BinaryIO) -> int:
    """The size of the object whose pack entry starts at ``fh``'s position,
    from its header only (for a delta: the size of the object it builds)."""
    kind, size = _entry_header(fh.read)
    if kind not in (OFS_DELTA, REF_DELTA):
        return size
    _skip_delta_base(fh.read, kind)
    return delta_result_size(inflate_prefix(fh, 20))


def _entry_header(read: Callable[[int], bytes]) -> tuple[int, int]:
    byte = _byte(read)
    kind = (byte >> 4) & 7
    size = byte & 0x0F
    shift = 4
    while byte & 0x80:
        byte = _byte(read)
        size |= (byte & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise PackFormatError("object size varint is too long")
    return kind, size


def _skip_delta_base(read: Callable[[int], bytes], kind: int) -> None:
    if kind == OFS_DELTA:
        for _ in range(10):
            if not _byte(read) & 0x80:
                return
        raise PackFormatError("delta offset varint is too long")
    if len(read(20)) != 20:
        raise PackFormatError("truncated delta base id")


def delta_result_size(delta_head: bytes) -> int:
    """The size of the object a delta builds (its second varint)."""
    _, pos = varint(delta_head, 0)  # the base's size
    result, _ = varint(delta_head, pos)
    return result


def varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 70:
            raise PackFormatError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def inflate_prefix(fh: BinaryIO, want: int) -> bytes:
    """Inflate only the first ``want`` bytes of the zlib stream at ``fh``."""
    inflater = zlib.decompressobj()
    out = b""
    while len(out) < want:
        chunk = fh.read(256)
        if not chunk:
            break
        out += inflater.decompress(chunk, want - len(out))
        if inflater.eof:
            break
    return out


class _Read:
    """``read(n)`` over a file in large chunks (headers are read a byte at a
    time), with ``unread`` for the input a zlib stream did not use."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.buffer = b""
        self.offset = 0

    def __call__(self, n: int) -> bytes:
        end = self.offset + n
        if end > len(self.buffer):
            rest = self.buffer[self.offset :]
            while len(rest) < n:
                chunk = self.fh.read(_CHUNK)
                if not chunk:
                    break
                rest += chunk
            self.buffer, self.offset, end = rest, 0, n
        data = self.buffer[self.offset : end]
        self.offset += len(data)
        return data

    def unread(self, data: bytes) -> None:
        if data:
            self.buffer, self.offset = data + self.buffer[self.offset :], 0


def _byte(read: Callable[[int], bytes]) -> int:
    data = read(1)
    if not data:
        raise PackFormatError("truncated pack entry")
    return data[0]


def scan_pack(fh: BinaryIO, max_object_bytes: int) -> int:
    """Walk every entry of the pack at ``fh``; return the object count.

    Raises ``PackFormatError`` when the pack is malformed or when an object
    (or the object a delta builds) would be larger than ``max_object_bytes``
    — before any object is held in memory whole.  Memory stays at a few
    chunks whatever the pack holds."""
    read = _Read(fh)
    head = read(12)
    if len(head) != 12 or head[:4] != b"PACK" or int.from_bytes(head[4:8], "big") not in (2, 3):
        raise PackFormatError("not a git pack (bad header)")
    count = int.from_bytes(head[8:12], "big")
    for index in range(count):
        kind, size = _entry_header(read)
        if kind in (OFS_DELTA, REF_DELTA):
            _skip_delta_base(read, kind)
        elif kind not in (OBJ_COMMIT, OBJ_TREE, OBJ_BLOB, OBJ_TAG):
            raise PackFormatError(f"object {index} has the unknown type {kind}")
        if size > max_object_bytes:
            raise PackTooLargeError(f"object {index} is {size} bytes, over the limit of {max_object_bytes}")
        _inflate_entry(read, index, kind, size, max_object_bytes)
    if len(read(20)) != 20:
        raise PackFormatError("truncated pack (no trailer)")
    return count


def _inflate_entry(read: _Read, index: int, kind: int, size: int, limit: int) -> None:
    """Inflate one entry's zlib stream in pieces, checking it holds exactly
    ``size`` bytes; for a delta, also the size of the object it builds."""
    inflater = zlib.decompressobj()
    produced = 0
    head = b""
    while not inflater.eof:
        chunk = read(_CHUNK)
        if not chunk:
            raise PackFormatError(f"object {index} is truncated")
        data = chunk
        while data and not inflater.eof:
            try:
                out = inflater.decompress(data, _CHUNK)
            except zlib.error as exc:
                raise PackFormatError(f"object {index} is not valid zlib data: {exc}") from None
            produced += len(out)
            if produced > size:
                raise PackFormatError(f"object {index} inflates to more than its declared {size} bytes")
            if kind in (OFS_DELTA, REF_DELTA) and len(head) < 20:
                head += out[: 20 - len(head)]
            data = inflater.unconsumed_tail
        read.unread(inflater.unused_data + data if inflater.eof else b"")
    if produced != size:
        raise PackFormatError(f"object {index} inflates to {produced} bytes, not its declared {size}")
    if kind in (OFS_DELTA, REF_DELTA):
        result = delta_result_size(head)
        if result > limit:
            raise PackTooLargeError(f"object {index} (a delta) builds {result} bytes, over the limit of {limit}")


def index_object_ids(data: bytes) -> set[bytes]:
    """The object ids (hex, as dulwich spells them) a pack index lists; only
    version 2 (git's Documentation/gitformat-pack.txt: a magic, the version,
    a 256-entry fan-out whose last entry is the count, then the sorted ids)."""
    return set(_index_ids(data)[0])


def index_offsets(data: bytes) -> dict[bytes, int]:
    """Each object id (hex) a version 2 pack index lists, with its offset in
    the pack: after the ids, a CRC-32 each, then a 4-byte offset each whose
    top bit set makes the rest an index into the 8-byte offsets that follow."""
    ids, count = _index_ids(data)
    start = 8 + 1024 + 24 * count
    if len(data) < start + 4 * count:
        raise PackFormatError("truncated pack index")
    offsets = list(struct.unpack_from(f">{count}I", data, start))
    large = start + 4 * count
    for i, value in enumerate(offsets):
        if value & 0x80000000:
            at = large + 8 * (value & 0x7FFFFFFF)
            if at + 8 > len(data):
                raise PackFormatError("truncated pack index")
            offsets[i] = int.from_bytes(data[at : at + 8], "big")
    return dict(zip(ids, offsets, strict=True))


def _index_ids(data: bytes) -> tuple[list[bytes], int]:
    if data[:8] != b"\xfftOc\x00\x00\x00\x02" or len(data) < 8 + 1024:
        raise PackFormatError("not a version 2 pack index")
    count = int.from_bytes(data[8 + 1020 : 8 + 1024], "big")
    table = data[8 + 1024 : 8 + 1024 + 20 * count]
    if len(table) != 20 * count:
        raise PackFormatError("truncated pack index")
    hexed = table.hex().encode()
    return [hexed[i : i + 40] for i in range(0, 40 * count, 40)], count
