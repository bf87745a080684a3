"""Hostile servers for fault tests: a git:// server that lies, stalls,
drips, floods or sends garbage, a smart-HTTP server and an ssh command that
never answer, and forged (re-encoded) copies of signed commits.

The git:// server speaks the real protocol (v0; a client asking for v2 with
the ``version=2`` extra parameter gets v0, which git and dulwich accept):
ref advertisement, ``want``/``have`` negotiation as ``git upload-pack`` does
it (``multi_ack``, ``multi_ack_detailed`` or neither; it never says
"ready"), then the pack over side-band-64k, side-band or raw.  Packs come
from the real ``git pack-objects``, so real ``git clone`` and dulwich both
talk to it.  Every thread, socket and subprocess is stopped on exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import subprocess
import threading
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.gitutil import env as git_env

MODES = (
    "honest",
    "stall",
    "stall_after_refs",
    "drip",
    "incomplete",
    "substitute",
    "phantom",
    "flood",
    "garbage",
)
_OPTIONS: dict[str, set[str]] = {
    "drip": {"interval", "chunk"},
    "incomplete": {"omit"},
    "substitute": {"tip", "source", "branch"},
    "phantom": {"tip", "branch", "pack"},
    "flood": {"size"},
    "garbage": {"data"},
}
OMIT_KINDS = ("tree", "blobs", "parent")
CAPABILITIES = b"multi_ack multi_ack_detailed side-band-64k side-band ofs-delta thin-pack no-progress agent=hostile/1"
LIFETIME = 300.0  # no connection is held, dripped or stalled longer than this
_POLL = 0.1  # how often blocked socket calls look at the stop flag
_FLUSH = b"0000"
_SIDEBAND_MAX = {"side-band-64k": 65515, "side-band": 995}  # data bytes per pkt-line after the band byte
_MAX_PKT_LINES = 100_000  # negotiation lines read per connection
PHANTOM_TIP = "f" * 40


class HangupError(Exception):
    """The connection ends: the peer closed it, the server stops, or a line
    made no sense."""


@dataclass
class Connection:
    """What one client sent (and how much it was sent)."""

    request: str = ""  # "git-upload-pack /hosts.git"
    params: list[str] = field(default_factory=list)  # "host=...", "version=2"
    wants: list[str] = field(default_factory=list)
    haves: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # shallow, deepen, filter...
    done: bool = False
    sent: int = 0  # bytes written to the client
    error: str = ""


def pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


def _git(repo: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin, env=git_env(), capture_output=True, check=False, timeout=60
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


# --- listening, with every thread and socket accounted for -------------------------------


class _Listener:
    """Accepts TCP connections on 127.0.0.1 and runs ``handle`` for each in
    its own thread.  ``close()`` stops everything it started."""

    def __init__(self, handle: Callable[[socket.socket, threading.Event], None]) -> None:
        self._handle = handle
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(_POLL)
        self.port: int = self._server.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept_loop, name=f"hostile-accept-{self.port}", daemon=True)
        self._accepting.start()

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(_POLL)
            thread = threading.Thread(target=self._run, args=(conn,), name=f"hostile-{self.port}", daemon=True)
            with self._lock:
                if self.stop.is_set():
                    conn.close()
                    return
                self._sockets.append(conn)
                self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self._handle(conn, self.stop)
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self._accepting.join(timeout=5)
        self._server.close()
        with self._lock:
            for conn in self._sockets:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked in recv or send
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
        for thread in self._threads:
            thread.join(timeout=5)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        left = self.leftovers()
        for conn in self._sockets:
            conn.close()
        if left:
            raise RuntimeError(f"hostile server on port {self.port} left running: {', '.join(left)}")

    def leftovers(self) -> list[str]:
        """Threads alive, sockets open and processes running: empty once closed."""
        left = [t.name for t in [self._accepting, *self._threads] if t.is_alive()]
        left += [f"socket {s.fileno()}" for s in [self._server, *self._sockets] if s.fileno() != -1]
        left += [f"pid {p.pid}" for p in self.procs if p.poll() is None]
        return left


class _Wire:
    """pkt-line I/O on one connection; every blocking call gives up when the
    server stops.  With ``interval`` it drips: ``chunk`` bytes, then a pause."""

    def __init__(self, conn: socket.socket, stop: threading.Event, record: Connection) -> None:
        self.conn, self.stop, self.record = conn, stop, record
        self.interval = 0.0
        self.chunk = 0

    def recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            if self.stop.is_set():
                raise HangupError("server stopped")
            try:
                piece = self.conn.recv(n - len(data))
            except TimeoutError:
                continue
            if not piece:
                raise HangupError("client closed the connection")
            data += piece
        return data

    def read_pkt(self) -> bytes | None:
        """One pkt-line's payload, or None for a flush-pkt."""
        head = self.recv_exact(4)
        try:
            size = int(head, 16)
        except ValueError:
            raise HangupError(f"not a pkt-line length: {head!r}") from None
        if size == 0:
            return None
        if size < 4:
            raise HangupError(f"unexpected special pkt-line {head!r}")
        return self.recv_exact(size - 4)

    def send(self, data: bytes) -> None:
        if not self.interval:
            self._send_all(data)
            return
        for start in range(0, len(data), self.chunk):
            if self.stop.wait(self.interval):
                raise HangupError("server stopped")
            self._send_all(data[start : start + self.chunk])

    def _send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.stop.is_set():
                raise HangupError("server stopped")
            try:
                sent = self.conn.send(view)
            except TimeoutError:
                continue
            self.record.sent += sent
            view = view[sent:]

    def hold(self) -> None:
        """Keep the connection open and silent until the server stops."""
        self.stop.wait(LIFETIME)
        raise HangupError("held until the server stopped")


# --- the git:// server ---------------------------------------------------------------------


class HostileGitServer:
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
        if mode == "flood" and not isinstance(opts.get("size"), int):
            raise ValueError("mode 'flood' needs size= (bytes of pack data, an int)")
        self.repo, self.mode, self.opts = repo, mode, opts
        self.connections: list[Connection] = []
        self._listener = _Listener(self._serve)
        self.port = self._listener.port
        self.url = f"git://127.0.0.1:{self.port}/{repo.name}"

    def close(self) -> None:
        self._listener.close()

    def leftovers(self) -> list[str]:
        return self._listener.leftovers()

    def _serve(self, conn: socket.socket, stop: threading.Event) -> None:
        record = Connection()
        self.connections.append(record)
        wire = _Wire(conn, stop, record)
        if self.mode == "drip":
            wire.interval = float(self.opts.get("interval", 0.1))  # type: ignore[arg-type]
            wire.chunk = int(self.opts.get("chunk", 8))  # type: ignore[call-overload]
        try:
            self._converse(wire, record)
        except (HangupError, OSError, RuntimeError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"

    def _converse(self, wire: _Wire, record: Connection) -> None:
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
            wire.send(_FLUSH)

    def _refs(self) -> list[tuple[str, str]]:
        if self.mode in ("substitute", "phantom"):
            tip = str(self.opts.get("tip", PHANTOM_TIP))
            return [(tip, "HEAD"), (tip, f"refs/heads/{self.opts.get('branch', 'main')}")]
        lines = _git(self.repo, "show-ref", "--head", "-d", check=False).decode().splitlines()
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
        return _flood_pack(int(self.opts["size"]))  # type: ignore[call-overload]

    def _pack_objects(self, repo: Path, listing: str, *, revs: bool, ofs: bool, thin: bool) -> Generator[bytes]:
        """``git pack-objects --stdout``, streamed; the process is killed if
        the client goes away first."""
        args = ["git", "-C", str(repo), "pack-objects", "--stdout", "-q"]
        args += ["--revs"] * revs + ["--delta-base-offset"] * ofs + ["--thin"] * (thin and revs)
        proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=git_env()
        )
        self._listener.procs.append(proc)
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
    return b"".join(lines) + _FLUSH


def _read_wants(wire: _Wire, record: Connection) -> None:
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


def _negotiate(wire: _Wire, record: Connection, known: set[str]) -> list[str]:
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
    listing = _git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)")
    return set(listing.decode().split())


def _incomplete(repo: Path, wants: list[str], common: list[str], omit: str) -> list[str]:
    """The objects an honest server would send, less those ``omit`` names."""
    tip = wants[0]
    root = _git(repo, "rev-parse", f"{tip}^{{tree}}").decode().strip()
    if omit == "parent":
        tree = _git(repo, "ls-tree", "-r", "-t", tip).decode().splitlines()
        return [tip, root] + [line.split()[2] for line in tree]
    revs = "".join(f"{w}\n" for w in wants) + "".join(f"^{c}\n" for c in common)
    listing = _git(repo, "rev-list", "--objects", "--stdin", stdin=revs.encode()).decode()
    ids = [line.split()[0] for line in listing.splitlines()]
    if omit == "tree":
        return [i for i in ids if i != root]
    typed = _git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="\n".join(ids).encode())
    return [sha for sha, kind in (line.split() for line in typed.decode().splitlines()) if kind != "blob"]


def _chunks(chunks: list[bytes]) -> Generator[bytes]:
    yield from chunks


def _empty_pack() -> bytes:
    header = b"PACK" + struct.pack(">II", 2, 0)
    return header + hashlib.sha1(header).digest()


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


class HostileURL(str):
    """The URL of a hostile server, with the server at hand (``.server``,
    ``.connections``)."""

    server: HostileGitServer

    @property
    def connections(self) -> list[Connection]:
        return self.server.connections


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
    * ``garbage``: answers the request with ``data``, which is no pkt-line.

    Yields the URL ``git://127.0.0.1:PORT/NAME`` (NAME is ``repo``'s name);
    on exit every socket, thread and subprocess is stopped (RuntimeError if
    one cannot be)."""
    server = HostileGitServer(repo, mode, **opts)
    url = HostileURL(server.url)
    url.server = server
    try:
        yield url
    finally:
        server.close()


# --- malleable copies of a signed commit ------------------------------------------------------

REENCODINGS = ("blank-line", "sha256-header", "trailing-space", "crlf", "duplicate", "moved")


def reencode_signature(repo: Path, sha: str, how: str) -> str:
    """Write into ``repo`` a copy of the signed commit ``sha`` whose
    signature header is re-encoded, and return the copy's id (which differs).

    Both git (commit.c, parse_buffer_signed_by_header) and dulwich
    (``Commit.extract_signature``) take the signed payload to be the commit
    less every header starting with ``gpgsig`` and its continuation lines,
    wherever it stands; ssh-keygen decodes the armour with b64_pton, which
    skips whitespace.  Hence the variants:

    * ``blank-line``: an empty continuation line inside the armour;
    * ``sha256-header``: the same signature again in a ``gpgsig-sha256``
      header (the other hash's signature, ignored in a SHA-1 repository);
    * ``trailing-space``: a space at the end of one armour line;
    * ``crlf``: CR LF line ends inside the armour;
    * ``duplicate``: a second ``gpgsig`` header with the same signature
      (git and dulwich join the two into one signature text);
    * ``moved``: the ``gpgsig`` header moved before ``author``.
    """
    if how not in REENCODINGS:
        raise ValueError(f"unknown re-encoding {how!r}; known: {', '.join(REENCODINGS)}")
    raw = _git(repo, "cat-file", "commit", sha)
    head, sep, body = raw.partition(b"\n\n")
    lines = [line + b"\n" for line in head.split(b"\n")]
    start = next((i for i, line in enumerate(lines) if line.startswith(b"gpgsig ")), None)
    if start is None:
        raise ValueError(f"commit {sha} in {repo} has no gpgsig header")
    end = start + 1
    while end < len(lines) and lines[end].startswith(b" "):
        end += 1
    block = lines[start:end]
    if how == "blank-line":
        block.insert(2, b" \n")
    elif how == "trailing-space":
        block[1] = block[1][:-1] + b" \n"
    elif how == "crlf":
        block = [block[0]] + [line[:-1] + b"\r\n" for line in block[1:-1]] + [block[-1]]
    elif how == "sha256-header":
        block += [b"gpgsig-sha256" + block[0][len(b"gpgsig") :], *block[1:]]
    elif how == "duplicate":
        block += block
    rest = lines[:start] + lines[end:]
    if how == "moved":
        author = next(i for i, line in enumerate(rest) if line.startswith(b"author "))
        rest[author:author] = block
    else:
        rest[start:start] = block
    forged = b"".join(rest)[:-1] + sep + body
    return _git(repo, "hash-object", "-t", "commit", "-w", "--literally", "--stdin", stdin=forged).decode().strip()
