"""Scanning a received pack before it is indexed: real packs from git pass
with their object count; a small pack that would inflate a huge object, a
pack that lies about sizes, and truncated or foreign data are refused
without inflating anything whole."""

from __future__ import annotations

import io
import resource
import subprocess
import zlib
from pathlib import Path

import pytest

from syncd.git.packscan import PackFormatError, scan_pack
from tests.gitutil import commit, git, init_repo


def pack_of(repo: Path, *revs: str) -> bytes:
    objects = git(repo, "rev-list", "--objects", *revs)
    ids = "\n".join(line.split()[0] for line in objects.splitlines()) + "\n"
    result = subprocess.run(
        ["git", "-C", str(repo), "pack-objects", "--stdout", "-q"], input=ids.encode(), capture_output=True, check=True
    )
    return result.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "repo")
    text = "".join(f"Subnet = 10.{i // 256}.{i % 256}.0/24\n" for i in range(2000))
    for i in range(3):
        (repo / "hosts").mkdir(exist_ok=True)
        (repo / "hosts" / "gateway").write_text(text + f"# {i}\n")  # deltas between versions
        (repo / "hosts" / f"n{i}").write_text(f"Subnet = 10.9.{i}.0/24\n")
        commit(repo, f"change {i}", None)
    return repo


def test_a_real_pack_with_deltas_passes(repo: Path) -> None:
    data = pack_of(repo, "HEAD")
    count = int(git(repo, "rev-list", "--objects", "--count", "HEAD") or 0) or len(
        git(repo, "rev-list", "--objects", "HEAD").splitlines()
    )
    assert scan_pack(io.BytesIO(data), 1 << 20) == count


def test_an_object_over_the_limit_is_refused_from_its_header(repo: Path) -> None:
    data = pack_of(repo, "HEAD")
    with pytest.raises(PackFormatError, match="over the limit"):
        scan_pack(io.BytesIO(data), 1000)  # gateway is ~50 kB


def _entry(kind: int, size: int, body: bytes) -> bytes:
    first = (kind << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(first | 0x80)
        first = size & 0x7F
        size >>= 7
    out.append(first)
    return bytes(out) + body


def _pack(*entries: bytes) -> bytes:
    import hashlib

    data = b"PACK" + (2).to_bytes(4, "big") + len(entries).to_bytes(4, "big") + b"".join(entries)
    return data + hashlib.sha1(data).digest()


def test_a_zlib_bomb_is_refused_with_little_memory() -> None:
    """1 GiB of zeros compresses to about 1 MiB: refused from the declared
    size before a byte is inflated; and a bomb that declares a small size is
    refused as soon as it inflates past it."""
    gib = 1 << 30
    compressor = zlib.compressobj(9)
    block = bytes(1 << 20)
    body = b"".join(compressor.compress(block) for _ in range(64)) + compressor.flush()
    assert len(body) < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PackFormatError, match="over the limit"):
        scan_pack(io.BytesIO(_pack(_entry(3, gib, body))), 256 << 20)
    with pytest.raises(PackFormatError, match="more than its declared"):
        scan_pack(io.BytesIO(_pack(_entry(3, 1000, body))), 256 << 20)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 << 10, f"peak RSS grew by {grown_kib} KiB"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a pack at all", "bad header"),
        (_pack(_entry(3, 5, zlib.compress(b"hello")))[:-25], "truncated"),
        (_pack(_entry(5, 5, zlib.compress(b"hello"))), "unknown type"),
        (_pack(_entry(3, 5, b"\x00\x01garbage")), "not valid zlib"),
        (_pack(_entry(3, 9, zlib.compress(b"hello"))), "not its declared"),
        (_pack(_entry(3, 5, zlib.compress(b"hello")))[:-20], "no trailer"),
    ],
)
def test_malformed_packs(data: bytes, message: str) -> None:
    with pytest.raises(PackFormatError, match=message):
        scan_pack(io.BytesIO(data), 1 << 20)


def test_a_delta_that_builds_a_huge_object_is_refused() -> None:
    # a ref-delta whose header says: base 5 bytes, result 2 GiB
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    delta = varint(5) + varint(2 << 30) + b"\x91\x00\x05"
    entry = _entry(7, len(delta), b"\x11" * 20 + zlib.compress(delta))
    with pytest.raises(PackFormatError, match="builds"):
        scan_pack(io.BytesIO(_pack(entry)), 1 << 20)


def test_index_offsets_reads_small_and_large_offsets() -> None:
    """Each id of a version 2 index with its offset, past 2 GiB too (git's
    large-offset table), as dulwich reads the same index."""
    from dulwich.object_format import SHA1
    from dulwich.objects import ObjectID
    from dulwich.pack import load_pack_index_file, write_pack_index

    from syncd.git.packscan import index_offsets

    offsets = [12, 0x7FFFFFFF, 0x80000000, (1 << 40) + 5, 4096]
    entries = sorted((bytes([i]) * 19 + bytes([i * 7]), offset, 0) for i, offset in enumerate(offsets))
    buf = io.BytesIO()
    write_pack_index(buf, entries, b"\0" * 20, version=2)
    found = index_offsets(buf.getvalue())
    assert found == {sha.hex().encode(): offset for sha, offset, _ in entries}
    index = load_pack_index_file("x.idx", io.BytesIO(buf.getvalue()), SHA1)
    assert all(index.object_offset(ObjectID(sha)) == offset for sha, offset in found.items())
    with pytest.raises(PackFormatError):
        index_offsets(buf.getvalue()[: 8 + 1024 + 24 * len(entries) + 8])
