"""The hostile git:// server (see ``hostile_git``).

It speaks the real protocol, v0 (a client asking for v2 with the
``version=2`` extra parameter gets v0, which git and dulwich accept): ref
advertisement, ``want``/``have`` negotiation answered as ``git upload-pack``
answers it (upload-pack.c, get_common_commits: ``multi_ack``,
``multi_ack_detailed`` or neither; it never says "ready"), then the pack
over side-band-64k, side-band or raw.  Packs come from the real ``git
pack-objects``, so real ``git clone`` and dulwich both talk to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import subprocess
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path

from tests.gitutil import env as git_env
from tests.hostile.wire import FLUSH, Connection, HangupError, HostileURL, Server, Wire, pkt, run_git, served

MODES = (
    "honest",
    "stall",
    "stall_after_refs",
    "drip",
    "incomplete",
    "substitute",
    "phantom",
    "flood",
    "deltabomb",
    "garbage",
)
_OPTIONS: dict[str, set[str]] = {
    "drip": {"interval", "chunk"},
    "incomplete": {"omit"},
    "substitute": {"tip", "source", "branch"},
    "phantom": {"tip", "branch", "pack"},
    "flood": {"size"},
    "deltabomb": {"size", "levels"},
    "garbage": {"data"},
}
OMIT_KINDS = ("tree", "blobs", "parent")
CAPABILITIES = b"multi_ack multi_ack_detailed side-band-64k side-band ofs-delta thin-pack no-progress agent=hostile/1"
PHANTOM_TIP = "f" * 40
_SIDEBAND_MAX = {"side-band-64k": 65515, "side-band": 995}  # data bytes per pkt-line after the band byte
_MAX_PKT_LINES = 100_000  # negotiation lines read per connection


class HostileGitServer(Server):
    """A git:// server for ``repo`` (a bare repository) in one of ``MODES``;
    see ``hostile_git``.  ``connections`` logs what each client sent."""

    def __init__(self, repo: Path, mode: str, **opts: object) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown hostile mode {mode!r}; known: {', '.join(MODES)}")
        unknown = set(opts) - _OPTIONS.get(mode, set())
        if unknown:
            raise ValueError(f"mode {mode!r} takes no option {', '.join(sorted(unknown))}")
        if mode == "incomplete" and opts.get("omit") not in OMIT_KINDS:
            raise ValueError(f"mode 'incomplete' needs omit= one of {OMIT_KINDS}, not {opts.get('omit')!r}")
        if mode == "substitute" and not ({"tip", "source"} <= set(opts)):
            raise ValueError("mode 'substitute' needs tip= (an object id) and source= (a repository)")
        if mode == "phantom" and opts.get("pack", "empty") not in ("empty", "none"):
            raise ValueError(f"mode 'phantom' takes pack= 'empty' or 'none', not {opts['pack']!r}")
        if mode == "flood" and not isinstance(opts.get("size"), int):
            raise ValueError("mode 'flood' needs size= (bytes of pack data, an int)")
        self.repo, self.mode, self.opts = repo, mode, opts
        super().__init__()
        self.url = f"git://127.0.0.1:{self.port}/{repo.name}"

    def serve(self, wire: Wire, record: Connection) -> None:
        if self.mode == "drip":
            wire.interval = float(self.opts.get("interval", 0.1))  # type: ignore[arg-type]
            wire.chunk = int(self.opts.get("chunk", 8))  # type: ignore[call-overload]
        request = wire.read_pkt() or b""
        command, *params = request.rstrip(b"\0").split(b"\0")
        record.request = command.decode(errors="replace")
        record.params = [p.decode(errors="replace") for p in params if p]
        if self.mode == "garbage":
            wire.send(bytes(self.opts.get("data", b"HTTP/1.0 418 I'm a teapot\r\n\r\nnot a pkt-line\n")))  # type: ignore[call-overload]
            return
        if self.mode == "stall":
            wire.hold()
        service, _, path = record.request.partition(" ")
        names = {self.repo.name, self.repo.name.removesuffix(".git")}
        if service != "git-upload-pack" or path.lstrip("/") not in names:
            wire.send(pkt(f"ERR no such repository: {record.request}\n".encode()))
            return
        wire.send(_advertisement(self._refs()))
        _read_wants(wire, record)
        if not record.wants:
            return  # the client has everything: git ends the conversation here too
        if self.mode == "stall_after_refs":
            wire.hold()
        source = Path(str(self.opts["source"])) if self.mode == "substitute" else self.repo
        common = _negotiate(wire, record, _objects(source))
        band = next((b for b in _SIDEBAND_MAX if b in record.capabilities), None)
        with contextlib.closing(self._pack(source, record, common)) as pack:
            for data in pack:
                if band is None:
                    wire.send(data)
                    continue
                for start in range(0, len(data), _SIDEBAND_MAX[band]):
                    wire.send(pkt(b"\x01" + data[start : start + _SIDEBAND_MAX[band]]))
        if band is not None:
            wire.send(FLUSH)

    def _refs(self) -> list[tuple[str, str]]:
        if self.mode in ("substitute", "phantom"):
            tip = str(self.opts.get("tip", PHANTOM_TIP))
            return [(tip, "HEAD"), (tip, f"refs/heads/{self.opts.get('branch', 'main')}")]
        lines = run_git(self.repo, "show-ref", "--head", "-d", check=False).decode().splitlines()
        return [(sha, name) for sha, name in (line.split(" ", 1) for line in lines)]

    def _pack(self, source: Path, record: Connection, common: list[str]) -> Generator[bytes]:
        ofs, thin = "ofs-delta" in record.capabilities, "thin-pack" in record.capabilities
        if self.mode in ("honest", "drip", "substitute"):
            revs = "".join(f"{w}\n" for w in record.wants) + "".join(f"^{c}\n" for c in common)
            return self._pack_objects(source, revs, revs=True, ofs=ofs, thin=thin)
        if self.mode == "incomplete":
            ids = _incomplete(source, record.wants, common, str(self.opts["omit"]))
            return self._pack_objects(source, "".join(f"{i}\n" for i in ids), revs=False, ofs=ofs, thin=False)
        if self.mode == "phantom":
            return _chunks([] if self.opts.get("pack") == "none" else [_empty_pack()])
        if self.mode == "deltabomb":
            return _chunks([_delta_bomb(int(self.opts.get("size", 16 << 20)), int(self.opts.get("levels", 24)))])  # type: ignore[call-overload]
        return _flood_pack(int(self.opts["size"]))  # type: ignore[call-overload]

    def _pack_objects(self, repo: Path, listing: str, *, revs: bool, ofs: bool, thin: bool) -> Generator[bytes]:
        """``git pack-objects --stdout``, streamed; the process is killed if
        the client goes away first."""
        args = ["git", "-C", str(repo), "pack-objects", "--stdout", "-q"]
        args += ["--revs"] * revs + ["--delta-base-offset"] * ofs + ["--thin"] * (thin and revs)
        proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=git_env()
        )
        self.listener.procs.append(proc)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(listing.encode())  # pack-objects reads all its input before writing
            proc.stdin.close()
            while data := os.read(proc.stdout.fileno(), 1 << 16):
                yield data
            if proc.wait(timeout=60) != 0:
                raise RuntimeError(f"git pack-objects: {proc.stderr.read().decode(errors='replace').strip()}")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
            proc.stdout.close()
            proc.stderr.close()


def _advertisement(refs: list[tuple[str, str]]) -> bytes:
    caps = CAPABILITIES
    head = dict((name, sha) for sha, name in refs).get("HEAD")
    for sha, name in refs:
        if name.startswith("refs/heads/") and sha == head:
            caps += f" symref=HEAD:{name}".encode()
            break
    refs = refs or [("0" * 40, "capabilities^{}")]
    lines = [pkt(f"{refs[0][0]} {refs[0][1]}".encode() + b"\0" + caps + b"\n")]
    lines += [pkt(f"{sha} {name}\n".encode()) for sha, name in refs[1:]]
    return b"".join(lines) + FLUSH


def _read_wants(wire: Wire, record: Connection) -> None:
    for _ in range(_MAX_PKT_LINES):
        line = wire.read_pkt()
        if line is None:
            return
        word, _, rest = line.rstrip(b"\n").decode(errors="replace").partition(" ")
        if word == "want":
            sha, _, caps = rest.partition(" ")
            record.wants.append(sha)
            record.capabilities += caps.split()
        else:
            record.other.append(f"{word} {rest}")
    raise HangupError("too many want lines")


def _negotiate(wire: Wire, record: Connection, known: set[str]) -> list[str]:
    """``have`` lines until ``done``, answered as upload-pack's
    get_common_commits() does (upload-pack.c); returns the common objects."""
    multi = 2 if "multi_ack_detailed" in record.capabilities else int("multi_ack" in record.capabilities)
    common: list[str] = []
    for _ in range(_MAX_PKT_LINES):
        line = wire.read_pkt()
        if line is None:
            if not common or multi:
                wire.send(pkt(b"NAK\n"))
            continue
        text = line.rstrip(b"\n").decode(errors="replace")
        if text.startswith("have "):
            sha = text[5:]
            record.haves.append(sha)
            if sha in known:
                if sha not in common:
                    common.append(sha)
                if multi or len(common) == 1:
                    status = {2: " common", 1: " continue", 0: ""}[multi]
                    wire.send(pkt(f"ACK {sha}{status}\n".encode()))
            continue
        if text == "done":
            record.done = True
            if common and multi:
                wire.send(pkt(f"ACK {common[-1]}\n".encode()))
            elif not common:
                wire.send(pkt(b"NAK\n"))
            return common
        raise HangupError(f"unexpected line in negotiation: {text!r}")
    raise HangupError("too many have lines")


def _objects(repo: Path) -> set[str]:
    listing = run_git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)")
    return set(listing.decode().split())


def _incomplete(repo: Path, wants: list[str], common: list[str], omit: str) -> list[str]:
    """The objects an honest server would send, less those ``omit`` names."""
    tip = wants[0]
    root = run_git(repo, "rev-parse", f"{tip}^{{tree}}").decode().strip()
    if omit == "parent":
        tree = run_git(repo, "ls-tree", "-r", "-t", tip).decode().splitlines()
        return [tip, root] + [line.split()[2] for line in tree]
    revs = "".join(f"{w}\n" for w in wants) + "".join(f"^{c}\n" for c in common)
    listing = run_git(repo, "rev-list", "--objects", "--stdin", stdin=revs.encode()).decode()
    ids = [line.split()[0] for line in listing.splitlines()]
    if omit == "tree":
        return [i for i in ids if i != root]
    typed = run_git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="\n".join(ids).encode())
    return [sha for sha, kind in (line.split() for line in typed.decode().splitlines()) if kind != "blob"]


def _chunks(chunks: list[bytes]) -> Generator[bytes]:
    yield from chunks


def _empty_pack() -> bytes:
    header = b"PACK" + struct.pack(">II", 2, 0)
    return header + hashlib.sha1(header).digest()


def _delta_bomb(size: int, levels: int) -> bytes:
    """A valid pack of a few KiB that expands while it is indexed: a blob
    of ``size`` zero bytes, then per level two OFS deltas on the level
    before (each copies its base and changes one byte), the leaf first.
    An indexer that keeps a base until all its deltas are resolved holds
    one whole ``size``-byte object per level."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n >> 7 else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def header(kind: int, n: int) -> bytes:
        out, first, n = bytearray(), (kind << 4) | (n & 0x0F), n >> 4
        out.append(first | (0x80 if n else 0))
        while n:
            out.append((n & 0x7F) | (0x80 if n >> 7 else 0))
            n >>= 7
        return bytes(out)

    def offset(n: int) -> bytes:
        out = bytearray([n & 0x7F])
        n >>= 7
        while n:
            n -= 1
            out.insert(0, 0x80 | (n & 0x7F))
            n >>= 7
        return bytes(out)

    def delta(tag: int) -> bytes:  # copy all but the last byte, then insert ``tag``
        ops, at, left = bytearray(), 0, size - 1
        while left:
            n = min(left, 0xFFFFFF)
            ops += bytes([0x80 | 0x0F | 0x70]) + at.to_bytes(4, "little") + n.to_bytes(3, "little")
            at, left = at + n, left - n
        return varint(size) + varint(size) + bytes(ops) + bytes([1, tag])

    body, count = bytearray(), 0

    def add(head: bytes, data: bytes) -> int:
        nonlocal count
        at = 12 + len(body)
        body.extend(head + zlib.compress(data, 9))
        count += 1
        return at

    parent = add(header(3, size), bytes(size))
    for level in range(levels):
        for tag in (2 * level % 250 + 1, 2 * level % 250 + 2):  # the leaf, then the next link
            data = delta(tag)
            at = 12 + len(body)
            last = add(header(6, len(data)) + offset(at - parent), data)
        parent = last
    pack = b"PACK" + struct.pack(">II", 2, count) + bytes(body)
    return pack + hashlib.sha1(pack).digest()


def _flood_pack(size: int) -> Generator[bytes]:
    """A valid pack of about ``size`` bytes (never fewer) holding one blob of
    random bytes, made as it is sent: memory stays flat whatever ``size``.

    The blob repeats one 64 KiB random block: deflate's 32 KiB window cannot
    see the repetition, so the data is incompressible; it is stored
    (zlib level 0) so the bytes on the wire are the bytes of ``size``."""
    block = os.urandom(1 << 16)
    body = max(size - 32, 0)
    kind_size, rest = (3 << 4) | (body & 0x0F), body >> 4
    header = bytearray(b"PACK" + struct.pack(">II", 2, 1))
    header.append(kind_size | (0x80 if rest else 0))
    while rest:
        header.append((rest & 0x7F) | (0x80 if rest >> 7 else 0))
        rest >>= 7
    digest = hashlib.sha1(header)
    yield bytes(header)
    deflate = zlib.compressobj(0)
    left = body
    while left:
        piece = block[: min(left, len(block))]
        left -= len(piece)
        out = deflate.compress(piece)
        if out:
            digest.update(out)
            yield out
    out = deflate.flush()
    digest.update(out)
    yield out + digest.digest()


@contextlib.contextmanager
def hostile_git(repo: Path, mode: str, **opts: object) -> Iterator[HostileURL]:
    """Serve the bare repository ``repo`` over git:// as ``mode`` does:

    * ``honest``: like git;
    * ``stall``: reads the request, never answers;
    * ``stall_after_refs``: advertises the refs, reads the wants, then silence;
    * ``drip``: the honest answer, ``chunk`` bytes (default 8) every
      ``interval`` seconds (default 0.1);
    * ``incomplete``: the real tip, but a pack without what ``omit`` names:
      ``"tree"`` the tip's root tree, ``"blobs"`` every blob, ``"parent"``
      every commit but the tip (the tip comes with its whole tree);
    * ``substitute``: advertises ``tip`` as ``branch`` (default main) and
      packs it from the repository ``source``;
    * ``phantom``: advertises ``tip`` (default ``PHANTOM_TIP``) and sends an
      empty pack (``pack="none"``: no pack at all);
    * ``flood``: the real refs, then a valid pack of at least ``size`` bytes;
    * ``deltabomb``: the real refs, then a pack of a few KiB whose ``levels``
      chained deltas each expand to ``size`` bytes (default 16 MiB, 24);
    * ``garbage``: answers the request with ``data``, which is no pkt-line.

    Yields the URL ``git://127.0.0.1:PORT/NAME`` (NAME is ``repo``'s name);
    on exit every socket, thread and subprocess is stopped (RuntimeError if
    one cannot be)."""
    server = HostileGitServer(repo, mode, **opts)
    try:
        yield served(server.url, server)
    finally:
        server.close()
