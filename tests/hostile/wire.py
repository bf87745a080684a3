"""The plumbing of the hostile servers: a TCP listener on 127.0.0.1 that
accounts for every thread, socket and subprocess it starts, and pkt-line I/O
whose every blocking call gives up when the server stops."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.gitutil import env as git_env

LIFETIME = 300.0  # no connection is held, dripped or stalled longer than this
POLL = 0.1  # how often blocked socket calls look at the stop flag
FLUSH = b"0000"


class HangupError(Exception):
    """The connection ends: the peer closed it, the server stops, or a line
    made no sense."""


@dataclass
class Connection:
    """What one client sent (and how much it was sent)."""

    request: str = ""  # "git-upload-pack /hosts.git"
    params: list[str] = field(default_factory=list)  # git://: "host=...", "version=2"; HTTP: header lines
    wants: list[str] = field(default_factory=list)
    haves: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # shallow, deepen, filter...
    done: bool = False
    sent: int = 0  # bytes written to the client
    error: str = ""


def pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


def run_git(repo: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin, env=git_env(), capture_output=True, check=False, timeout=60
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


class Listener:
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
        self._server.settimeout(POLL)
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
            conn.settimeout(POLL)
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


class Wire:
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


class Server:
    """A listener and the log of its connections; subclasses answer them
    in ``serve`` (set their own attributes before calling ``__init__``:
    the listener starts at once)."""

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self.listener = Listener(self._serve)
        self.port = self.listener.port

    def _serve(self, conn: socket.socket, stop: threading.Event) -> None:
        record = Connection()
        self.connections.append(record)
        wire = Wire(conn, stop, record)
        try:
            self.serve(wire, record)
        except (HangupError, OSError, RuntimeError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"

    def serve(self, wire: Wire, record: Connection) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()

    def leftovers(self) -> list[str]:
        return self.listener.leftovers()


class HostileURL(str):
    """The URL of a hostile server, with the server at hand (``.server``,
    ``.connections``)."""

    server: Server

    @property
    def connections(self) -> list[Connection]:
        return self.server.connections


def served(url: str, server: Server) -> HostileURL:
    result = HostileURL(url)
    result.server = server
    return result
