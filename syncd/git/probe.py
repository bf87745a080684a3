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
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.errors import FetchError
from syncd.git.failures import timed_out
from syncd.git.pktline import (
    ADVERTISEMENT_LIMIT,
    SHA,
    PktReader,
    Refused,
    Unsure,
    Watch,
    parse_advertisement,
    parse_info_refs,
    parse_smart,
    pipe_recv,
    pkt_line,
    socket_recv,
)
from syncd.git.urls import local_path, redact_url

if TYPE_CHECKING:
    import ssl

GIT_PORT = 9418
SMART_TYPE = "application/x-git-upload-pack-advertisement"
PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")

Answer = str | FetchError | None


def advertised(
    urls: Sequence[str],
    branch: str,
    timeout: float,
    ca_file: Path | None = None,
    ssh_command: str | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[Answer]:
    """Each URL's answer (see the module doc), all URLs asked at once under
    one deadline.  ``KeyboardInterrupt`` when ``cancel()`` turns true."""
    ref = f"refs/heads/{branch}".encode()
    deadline = time.monotonic() + timeout
    answers: list[Answer] = [None] * len(urls)

    def ask(i: int) -> None:
        answers[i] = _answer(urls[i], ref, timeout, deadline, (ca_file, ssh_command), cancel)

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
    url: str,
    ref: bytes,
    timeout: float,
    deadline: float,
    transport: tuple[Path | None, str | None],
    cancel: Callable[[], bool] | None,
) -> Answer:
    ca_file, ssh_command = transport
    shown = redact_url(url)
    watch = Watch(deadline, cancel)
    try:
        refs = _refs(url, ref, watch, ca_file, ssh_command)
        tip = refs.get(ref)
        if tip is None:
            return FetchError(f"{shown}: the remote has no branch {ref.decode()[len('refs/heads/') :]}")
        return tip.decode()
    except Unsure:
        return None
    except Refused as exc:
        return FetchError(f"{shown}: {exc}")
    except (OSError, ValueError) as exc:
        if watch.expired or time.monotonic() >= watch.deadline:
            return timed_out(shown, timeout)
        if watch.cancelled:
            return None
        return FetchError(f"{shown}: {type(exc).__name__}: {str(exc).replace(url, shown)[:300]}")
    finally:
        watch.stop()


def _refs(url: str, ref: bytes, watch: Watch, ca_file: Path | None, ssh_command: str | None) -> dict[bytes, bytes]:
    path = local_path(url)
    if path is not None:
        return _local_refs(path, ref)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "git":
        return _git_refs(parts, watch)
    if parts.scheme in ("http", "https"):
        return _http_refs(parts, watch, ca_file)
    if parts.scheme == "ssh":
        return _ssh_refs(parts, watch, ssh_command)
    raise Unsure  # scp-like host:path, and anything else: the fetch path


# --- git:// -------------------------------------------------------------------


def _git_refs(parts: urllib.parse.SplitResult, watch: Watch) -> dict[bytes, bytes]:
    """The upload-pack advertisement of a ``git daemon`` (protocol v0)."""
    host, port = parts.hostname, parts.port or GIT_PORT
    if not host or parts.username or parts.query or "%" in parts.path or not parts.path:
        raise Unsure
    sock = socket.create_connection((host, port), timeout=watch.remaining(math.inf) + 1)
    watch.guard(sock)
    request = b"git-upload-pack " + parts.path.encode() + b"\0host=" + host.encode("ascii") + b"\0"
    sock.settimeout(watch.remaining())
    sock.sendall(pkt_line(request))
    refs = parse_advertisement(PktReader(socket_recv(sock, watch), watch))
    sock.settimeout(watch.remaining())
    sock.sendall(b"0000")  # want nothing: the server ends the exchange
    return refs


# --- ssh -----------------------------------------------------------------------


def _ssh_refs(parts: urllib.parse.SplitResult, watch: Watch, ssh_command: str | None) -> dict[bytes, bytes]:
    """``git-upload-pack`` over the configured ssh command, spawned as the
    fetch spawns it (``ssh -x [-p PORT] [USER@]HOST "git-upload-pack 'PATH'"``),
    in a session of its own that is killed at the deadline."""
    import shlex
    import subprocess

    host = parts.hostname
    if not host or parts.password is not None or "%" in parts.netloc + parts.path or parts.query or not parts.path:
        raise Unsure
    path = parts.path[1:] if parts.path.startswith("/~") else parts.path
    target = f"{parts.username}@{host}" if parts.username else host
    if target.startswith("-"):
        raise Unsure
    args = [*shlex.split(ssh_command or "ssh"), "-x", *(["-p", str(parts.port)] if parts.port else []), target]
    args.append("git-upload-pack '" + path.replace("'", "'\\''") + "'")
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        refs = parse_advertisement(PktReader(pipe_recv(proc.stdout.fileno(), watch), watch))
        proc.stdin.write(b"0000")  # want nothing: upload-pack ends, and ssh with it
        proc.stdin.close()
        proc.wait(timeout=watch.remaining(math.inf))
        return refs
    except subprocess.TimeoutExpired:
        raise TimeoutError("the deadline passed") from None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


# --- smart and dumb HTTP ---------------------------------------------------------


def _http_refs(parts: urllib.parse.SplitResult, watch: Watch, ca_file: Path | None) -> dict[bytes, bytes]:
    """``info/refs`` as the fetch asks it: smart when the server answers
    with an upload-pack advertisement, a static mirror's file otherwise."""
    import http.client

    if any(os.environ.get(name) for name in PROXY_VARIABLES) or not parts.hostname:
        raise Unsure  # the fetch honours proxies: leave them to it
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
            raise Unsure  # redirects, authentication, a missing repository: the fetch path says it
        body = _read_body(response, watch)
        if response.getheader("Content-Type", "") == SMART_TYPE:
            return parse_smart(body)
        return parse_info_refs(body)
    finally:
        conn.close()


def _tls(ca_file: Path | None) -> ssl.SSLContext:
    import ssl

    context = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _read_body(response: object, watch: Watch) -> bytes:
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
            raise Refused(f"the ref advertisement is over {ADVERTISEMENT_LIMIT} bytes")


# --- local repositories ---------------------------------------------------------


def _local_refs(path: Path, ref: bytes) -> dict[bytes, bytes]:
    """A local repository's ref as git reads it: the loose ref file, else
    its line in ``packed-refs``; anything else (a symbolic ref, a ``.git``
    file, no repository, an unreadable file) is the fetch path's."""
    git_dir = path / ".git" if (path / ".git").is_dir() else path
    if not ((git_dir / "HEAD").is_file() and (git_dir / "objects").is_dir()):
        raise Unsure
    try:
        with open(git_dir / os.fsdecode(ref), "rb") as fh:
            data = fh.read(100)
    except FileNotFoundError:
        return _packed_ref(git_dir, ref)
    except OSError:
        raise Unsure from None
    sha = data.rstrip(b"\n")
    if not SHA.fullmatch(sha) or data != sha + b"\n":
        raise Unsure
    return {ref: sha}


def _packed_ref(git_dir: Path, ref: bytes) -> dict[bytes, bytes]:
    try:
        with open(git_dir / "packed-refs", "rb") as fh:
            data = fh.read(ADVERTISEMENT_LIMIT + 1)
    except FileNotFoundError:
        return {}
    except OSError:
        raise Unsure from None
    if len(data) > ADVERTISEMENT_LIMIT:
        raise Unsure
    for line in data.splitlines():
        if line.startswith((b"#", b"^")):
            continue
        sha, _, name = line.partition(b" ")
        if not SHA.fullmatch(sha):
            raise Unsure
        if name == ref:
            return {ref: sha}
    return {}
