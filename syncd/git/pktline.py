"""The git wire as the refs probe reads it (``probe``): pkt-lines and ref
advertisements (protocol v0, smart HTTP, a static mirror's ``info/refs``),
read strictly from an untrusted server under one deadline (``Watch``) and
a size cap (``ADVERTISEMENT_LIMIT``)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Callable

ADVERTISEMENT_LIMIT = 4 << 20  # bytes of ref advertisement read at most
POLL_SECONDS = 0.2  # how often a wait checks the deadline and ``cancel``
SHA = re.compile(rb"[0-9a-f]{40}")


class Unsure(Exception):  # noqa: N818 -- a signal: take the fetch path
    """This URL is answered by the fetch path, not here."""


class Refused(Exception):  # noqa: N818 -- a failure, worded for the URL's message
    """The server's answer is no usable advertisement (the message says why)."""


class Watch:
    """The deadline and ``cancel`` of one URL's exchange: a socket is shut
    down when either comes, so that a blocked read ends."""

    def __init__(self, deadline: float, cancel: Callable[[], bool] | None) -> None:
        self.deadline, self.cancel = deadline, cancel
        self.expired = self.cancelled = False
        self._done = threading.Event()
        self._sock: socket.socket | None = None

    def guard(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline or on ``cancel``."""
        self._sock = sock
        threading.Thread(target=self._run, daemon=True).start()

    def remaining(self, cap: float = POLL_SECONDS) -> float:
        """Seconds left (at most ``cap``); ``TimeoutError`` after the
        deadline, ``InterruptedError`` once cancelled.  A socket's own
        timeout is set a second past the deadline: the watch ends it first."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError("the deadline passed")
        if self.cancel is not None and self.cancel():
            self.cancelled = True
            raise InterruptedError("cancelled")
        return min(left, cap)

    def _run(self) -> None:
        while not self._done.wait(POLL_SECONDS / 2):
            if time.monotonic() >= self.deadline:
                self.expired = True
            elif self.cancel is not None and self.cancel():
                self.cancelled = True
            else:
                continue
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            return

    def stop(self) -> None:
        self._done.set()
        if self._sock is not None:
            self._sock.close()


def pkt_line(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


class PktReader:
    """pkt-lines from ``recv`` (the next bytes, b"" at the end), within the
    watch's deadline and the size cap."""

    def __init__(self, recv: Callable[[], bytes], watch: Watch) -> None:
        self.recv, self.watch = recv, watch
        self.buffer = b""
        self.total = 0

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.recv()
            if not chunk:
                self.watch.remaining()  # a socket shut down at the deadline reads as its end
                raise Refused("the server closed the connection before the end of its advertisement")
            self.total += len(chunk)
            if self.total > ADVERTISEMENT_LIMIT:
                raise Refused(f"the ref advertisement is over {ADVERTISEMENT_LIMIT} bytes")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def __call__(self) -> bytes | None:
        """The next pkt-line's payload; None for a flush."""
        head = self._read(4)
        if not re.fullmatch(rb"[0-9a-f]{4}", head):
            raise Refused(f"malformed pkt-line length {head!r}")
        size = int(head, 16)
        if size == 0:
            return None
        if size < 4:
            raise Refused(f"malformed pkt-line length {head!r}")
        return self._read(size - 4)


def socket_recv(sock: socket.socket, watch: Watch) -> Callable[[], bytes]:
    def recv() -> bytes:
        while True:
            sock.settimeout(watch.remaining())
            try:
                return sock.recv(65536)
            except TimeoutError:
                continue  # the watch decides when waiting is over

    return recv


def parse_advertisement(read: Callable[[], bytes | None]) -> dict[bytes, bytes]:
    """ref name -> object id, from a v0 advertisement up to its flush."""
    refs: dict[bytes, bytes] = {}
    first = True
    while (line := read()) is not None:
        if first and line.startswith(b"ERR "):
            raise Refused(f"the server says: {line[4:].decode(errors='replace').strip()[:200]}")
        if first and line.rstrip(b"\n") == b"version 1":
            first = False
            continue
        if first:
            line = line.split(b"\0", 1)[0]
            first = False
        sha, sep, name = line.rstrip(b"\n").partition(b" ")
        if not sep or not SHA.fullmatch(sha) or not name or b"\0" in name or b" " in name:
            raise Refused(f"malformed ref advertisement line {line[:80]!r}")
        if name.endswith(b"^{}") or name == b"capabilities^{}":
            continue
        if name in refs:
            raise Refused(f"the ref advertisement names {name[:80].decode(errors='replace')} twice")
        refs[name] = sha
    return refs


def pipe_recv(fd: int, watch: Watch) -> Callable[[], bytes]:
    import select

    def recv() -> bytes:
        while True:
            ready, _, _ = select.select([fd], [], [], watch.remaining())
            if ready:
                return os.read(fd, 65536)

    return recv


def parse_smart(body: bytes) -> dict[bytes, bytes]:
    at = 0

    def read() -> bytes | None:
        nonlocal at
        head = body[at : at + 4]
        if not re.fullmatch(rb"[0-9a-f]{4}", head):
            raise Refused(f"malformed pkt-line length {head!r}")
        size = int(head, 16)
        if size == 0:
            at += 4
            return None
        if size < 4 or at + size > len(body):
            raise Refused(f"malformed pkt-line length {head!r}")
        line, at = body[at + 4 : at + size], at + size
        return line

    if read() != b"# service=git-upload-pack\n" or read() is not None:
        raise Refused("the smart HTTP advertisement does not start with its service line")
    return parse_advertisement(read)


def parse_info_refs(body: bytes) -> dict[bytes, bytes]:
    """A static mirror's ``info/refs`` (``git update-server-info``)."""
    refs: dict[bytes, bytes] = {}
    for line in body.splitlines():
        sha, sep, name = line.partition(b"\t")
        if not sep or not SHA.fullmatch(sha) or not name or b"\t" in name:
            raise Refused(f"malformed info/refs line {line[:80]!r}")
        if not name.endswith(b"^{}"):
            refs[name] = sha
    return refs
