"""The tip each URL advertises, asked with the standard library alone.

A pass whose every URL still advertises the applied commit has nothing to
fetch: asking is its whole network cost, and loading dulwich (tens of
milliseconds in a fresh process) or forking the fetch child would cost more
than the question.  ``advertised`` asks each URL for the tip of one branch,
as the fetch would ask it, and answers for each URL one of:

* the tip (40 hex digits) the URL advertises for the branch;
* ``FetchTimeoutError``: no complete advertisement within ``repo.timeout``
  (the same error, in the same words, as the fetch child's);
* ``FetchError``: any other failure (connection refused, an error from the
  server, a malformed or oversized advertisement, no such branch);
* None: a situation this module does not handle exactly as the fetch does
  (ssh, a proxy in the environment, an HTTP redirect or error status, a
  symbolic or packed ref of a local repository, ...): the caller then takes
  the fetch path, which handles it.

Transports: ``git://`` (the upload-pack advertisement, protocol v0,
answered with a flush: "want nothing"), smart and dumb HTTP(S)
(``info/refs``, with ``repo.ca_file`` as the only trusted CA when set, the
system's CAs otherwise, like the fetch's ``http.sslCAInfo``; credentials in
the URL as HTTP basic authentication) and local repositories (a loose ref
file, read as git reads it).

Every server is untrusted input.  One deadline (``repo.timeout``) covers the
whole exchange, so a server that drips a byte a second is cut off as one
that stalls; the advertisement is capped (``ADVERTISEMENT_LIMIT``) and its
pkt-lines parsed strictly; messages show URLs through ``redact_url``.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.errors import (
    ConfigError,
    FetchError,
    FetchTimeoutError,
    FetchTooLargeError,
    NoBranchError,
    NotARepositoryError,
    SignatureError,
    SyncdError,
)
from syncd.git.urls import local_path, redact_url

if TYPE_CHECKING:
    import ssl

ADVERTISEMENT_LIMIT = 4 << 20  # bytes of ref advertisement read at most
POLL_SECONDS = 0.2  # how often a wait checks the deadline and ``cancel``
GIT_PORT = 9418
SHA = re.compile(rb"[0-9a-f]{40}")
SMART_TYPE = "application/x-git-upload-pack-advertisement"
PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")

Answer = str | FetchError | None


class _Unsure(Exception):  # noqa: N818 -- a signal: take the fetch path
    """This URL is answered by the fetch path, not here."""


class _Refused(Exception):  # noqa: N818 -- a failure, worded for the URL's message
    """The server's answer is no usable advertisement (the message says why)."""


def advertised(
    urls: Sequence[str],
    branch: str,
    timeout: float,
    ca_file: Path | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[Answer]:
    """Each URL's answer (see the module doc), all URLs asked at once under
    one deadline.  ``KeyboardInterrupt`` when ``cancel()`` turns true."""
    ref = f"refs/heads/{branch}".encode()
    deadline = time.monotonic() + timeout
    answers: list[Answer] = [None] * len(urls)

    def ask(i: int) -> None:
        answers[i] = _answer(urls[i], ref, timeout, deadline, ca_file, cancel)

    if len(urls) == 1:
        ask(0)
    else:
        threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(len(urls))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if cancel is not None and cancel():
        raise KeyboardInterrupt
    return answers


def _answer(
    url: str, ref: bytes, timeout: float, deadline: float, ca_file: Path | None, cancel: Callable[[], bool] | None
) -> Answer:
    shown = redact_url(url)
    watch = _Watch(deadline, cancel)
    try:
        refs = _refs(url, ref, watch, ca_file)
        tip = refs.get(ref)
        if tip is None:
            return FetchError(f"{shown}: the remote has no branch {ref.decode()[len('refs/heads/') :]}")
        return tip.decode()
    except _Unsure:
        return None
    except _Refused as exc:
        return FetchError(f"{shown}: {exc}")
    except (OSError, ValueError) as exc:
        if watch.expired or time.monotonic() >= watch.deadline:
            return FetchTimeoutError(f"{shown}: no complete answer within {timeout:g} s (repo.timeout)")
        if watch.cancelled:
            return None
        return FetchError(f"{shown}: {type(exc).__name__}: {str(exc).replace(url, shown)[:300]}")
    finally:
        watch.stop()


def _refs(url: str, ref: bytes, watch: _Watch, ca_file: Path | None) -> dict[bytes, bytes]:
    path = local_path(url)
    if path is not None:
        return _local_refs(path, ref)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "git":
        return _git_refs(parts, watch)
    if parts.scheme in ("http", "https"):
        return _http_refs(parts, watch, ca_file)
    raise _Unsure  # ssh://, scp-like host:path, and anything else: the fetch path


class _Watch:
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


# --- git:// -------------------------------------------------------------------


def _git_refs(parts: urllib.parse.SplitResult, watch: _Watch) -> dict[bytes, bytes]:
    """The upload-pack advertisement of a ``git daemon`` (protocol v0)."""
    host, port = parts.hostname, parts.port or GIT_PORT
    if not host or parts.username or parts.query or "%" in parts.path or not parts.path:
        raise _Unsure
    sock = socket.create_connection((host, port), timeout=watch.remaining(math.inf) + 1)
    watch.guard(sock)
    request = b"git-upload-pack " + parts.path.encode() + b"\0host=" + host.encode("idna") + b"\0"
    sock.settimeout(watch.remaining())
    sock.sendall(pkt_line(request))
    reader = _PktReader(sock, watch)
    refs = parse_advertisement(reader)
    sock.settimeout(watch.remaining())
    sock.sendall(b"0000")  # want nothing: the server ends the exchange
    return refs


def pkt_line(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


class _PktReader:
    """pkt-lines from a socket, within the deadline and the size cap."""

    def __init__(self, sock: socket.socket, watch: _Watch) -> None:
        self.sock, self.watch = sock, watch
        self.buffer = b""
        self.total = 0

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.sock.settimeout(self.watch.remaining())
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue  # the watch decides when waiting is over
            if not chunk:
                self.watch.remaining()  # a socket shut down at the deadline reads as its end
                raise _Refused("the server closed the connection before the end of its advertisement")
            self.total += len(chunk)
            if self.total > ADVERTISEMENT_LIMIT:
                raise _Refused(f"the ref advertisement is over {ADVERTISEMENT_LIMIT} bytes")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def __call__(self) -> bytes | None:
        """The next pkt-line's payload; None for a flush."""
        head = self._read(4)
        if not re.fullmatch(rb"[0-9a-f]{4}", head):
            raise _Refused(f"malformed pkt-line length {head!r}")
        size = int(head, 16)
        if size == 0:
            return None
        if size < 4:
            raise _Refused(f"malformed pkt-line length {head!r}")
        return self._read(size - 4)


def parse_advertisement(read: Callable[[], bytes | None]) -> dict[bytes, bytes]:
    """ref name -> object id, from a v0 advertisement up to its flush."""
    refs: dict[bytes, bytes] = {}
    first = True
    while (line := read()) is not None:
        if first and line.startswith(b"ERR "):
            raise _Refused(f"the server says: {line[4:].decode(errors='replace').strip()[:200]}")
        if first and line.rstrip(b"\n") == b"version 1":
            first = False
            continue
        if first:
            line = line.split(b"\0", 1)[0]
            first = False
        sha, sep, name = line.rstrip(b"\n").partition(b" ")
        if not sep or not SHA.fullmatch(sha) or not name or b"\0" in name or b" " in name:
            raise _Refused(f"malformed ref advertisement line {line[:80]!r}")
        if name.endswith(b"^{}") or name == b"capabilities^{}":
            continue
        if name in refs:
            raise _Refused(f"the ref advertisement names {name[:80].decode(errors='replace')} twice")
        refs[name] = sha
    return refs


# --- smart and dumb HTTP ---------------------------------------------------------


def _http_refs(parts: urllib.parse.SplitResult, watch: _Watch, ca_file: Path | None) -> dict[bytes, bytes]:
    """``info/refs`` as the fetch asks it: smart when the server answers
    with an upload-pack advertisement, a static mirror's file otherwise."""
    import http.client

    if any(os.environ.get(name) for name in PROXY_VARIABLES) or not parts.hostname:
        raise _Unsure  # the fetch honours proxies: leave them to it
    base = parts.path if parts.path.endswith("/") else parts.path + "/"
    target = base + "info/refs?service=git-upload-pack"
    headers = {"Host": parts.netloc.rpartition("@")[2], "User-Agent": "git/syncd", "Accept": "*/*"}
    headers["Pragma"] = "no-cache"
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=watch.remaining(math.inf) + 1, context=_tls(ca_file)
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=watch.remaining(math.inf) + 1)
    try:
        conn.connect()
        assert conn.sock is not None
        watch.guard(conn.sock)
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            raise _Unsure  # redirects, authentication, a missing repository: the fetch path says it
        body = _read_body(response, watch)
        if response.getheader("Content-Type", "") == SMART_TYPE:
            return _smart(body)
        return parse_info_refs(body)
    finally:
        conn.close()


def _tls(ca_file: Path | None) -> ssl.SSLContext:
    import ssl

    context = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _read_body(response: object, watch: _Watch) -> bytes:
    import http.client

    assert isinstance(response, http.client.HTTPResponse)
    data = b""
    while True:
        watch.remaining()
        chunk = response.read1(65536)
        if not chunk:
            return data
        data += chunk
        if len(data) > ADVERTISEMENT_LIMIT:
            raise _Refused(f"the ref advertisement is over {ADVERTISEMENT_LIMIT} bytes")


def _smart(body: bytes) -> dict[bytes, bytes]:
    at = 0

    def read() -> bytes | None:
        nonlocal at
        head = body[at : at + 4]
        if not re.fullmatch(rb"[0-9a-f]{4}", head):
            raise _Refused(f"malformed pkt-line length {head!r}")
        size = int(head, 16)
        if size == 0:
            at += 4
            return None
        if size < 4 or at + size > len(body):
            raise _Refused(f"malformed pkt-line length {head!r}")
        line, at = body[at + 4 : at + size], at + size
        return line

    if read() != b"# service=git-upload-pack\n" or read() is not None:
        raise _Refused("the smart HTTP advertisement does not start with its service line")
    return parse_advertisement(read)


def parse_info_refs(body: bytes) -> dict[bytes, bytes]:
    """A static mirror's ``info/refs`` (``git update-server-info``)."""
    refs: dict[bytes, bytes] = {}
    for line in body.splitlines():
        sha, sep, name = line.partition(b"\t")
        if not sep or not SHA.fullmatch(sha) or not name or b"\t" in name:
            raise _Refused(f"malformed info/refs line {line[:80]!r}")
        if not name.endswith(b"^{}"):
            refs[name] = sha
    return refs


# --- local repositories ---------------------------------------------------------


def _local_refs(path: Path, ref: bytes) -> dict[bytes, bytes]:
    """A local repository's ref as git reads it: the loose ref file, else
    its line in ``packed-refs``; anything else (a symbolic ref, a ``.git``
    file, no repository, an unreadable file) is the fetch path's."""
    git_dir = path / ".git" if (path / ".git").is_dir() else path
    if not ((git_dir / "HEAD").is_file() and (git_dir / "objects").is_dir()):
        raise _Unsure
    try:
        with open(git_dir / os.fsdecode(ref), "rb") as fh:
            data = fh.read(100)
    except FileNotFoundError:
        return _packed_ref(git_dir, ref)
    except OSError:
        raise _Unsure from None
    sha = data.rstrip(b"\n")
    if not SHA.fullmatch(sha) or data != sha + b"\n":
        raise _Unsure
    return {ref: sha}


def _packed_ref(git_dir: Path, ref: bytes) -> dict[bytes, bytes]:
    try:
        with open(git_dir / "packed-refs", "rb") as fh:
            data = fh.read(ADVERTISEMENT_LIMIT + 1)
    except FileNotFoundError:
        return {}
    except OSError:
        raise _Unsure from None
    if len(data) > ADVERTISEMENT_LIMIT:
        raise _Unsure
    for line in data.splitlines():
        if line.startswith((b"#", b"^")):
            continue
        sha, _, name = line.partition(b" ")
        if not SHA.fullmatch(sha):
            raise _Unsure
        if name == ref:
            return {ref: sha}
    return {}


def fetch_failure(failures: list[SyncdError], branch: str) -> SyncdError:
    """The one error for a fetch no URL survived: a refused signature wins
    (exit 1: only a new commit can fix it); no URL having the branch is a
    config error; else the URLs' failures, of one class when they agree."""
    summary = "; ".join(f.message for f in failures)
    refusals = [f for f in failures if isinstance(f, SignatureError)]
    if refusals:
        return SignatureError("; ".join(f.message for f in refusals))
    if failures and all(isinstance(f, NoBranchError) for f in failures):
        return ConfigError(
            f"no repository URL has the branch {branch}: {summary}",
            hint="check repo.branch (and repo.url) in the node's config",
        )
    if failures and all(isinstance(f, NoBranchError | NotARepositoryError) for f in failures):
        return ConfigError(
            f"no repository URL could be fetched: {summary}",
            hint="check repo.url (and repo.mirrors) in the node's config: a local path must be a git repository "
            "(a bare repository or a clone); a server is named by its URL (ssh://, https://, git://)",
        )
    for kind in (FetchTimeoutError, FetchTooLargeError):
        if failures and all(isinstance(f, kind) for f in failures):
            return kind(f"no repository URL could be fetched: {summary}")
    return FetchError(f"no repository URL could be fetched: {summary}")
