"""Servers that never answer, over smart HTTP and over ssh, for the same
deadline tests as the git:// ``stall`` mode."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

from tests.hostile.wire import LIFETIME, Connection, HangupError, HostileURL, Server, Wire, served

_MAX_REQUEST = 64 << 10


class StallingHTTPServer(Server):
    """Reads an HTTP request's head, logs its first line as the
    connection's ``request``, and never answers."""

    def serve(self, wire: Wire, record: Connection) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            if len(head) > _MAX_REQUEST:
                raise HangupError(f"no end of the request head in {_MAX_REQUEST} bytes")
            head += wire.recv_exact(1)
        record.request = head.split(b"\r\n", 1)[0].decode(errors="replace")
        record.params = [line.decode(errors="replace") for line in head.split(b"\r\n")[1:] if line]
        wire.hold()


@contextlib.contextmanager
def stalling_http(name: str = "hosts.git") -> Iterator[HostileURL]:
    """Yields ``http://127.0.0.1:PORT/NAME`` of a server that accepts, reads
    the request and never answers; on exit every socket and thread is
    stopped (the client sees the connection close)."""
    server = StallingHTTPServer()
    try:
        yield served(f"http://127.0.0.1:{server.port}/{name}", server)
    finally:
        server.close()


def stalling_ssh_command(tmp: Path) -> str:
    """A command string for dulwich's ``ssh_command=`` (or git's
    ``core.sshCommand``) that stands in for ssh and never answers.

    It reads and discards its stdin and writes nothing, so the client waits
    for the ref advertisement forever.  It ends:

    * when its stdin closes: dulwich closes it when the client is closed,
      and the kernel when the client's process dies;
    * when sent SIGTERM: each run appends its pid to ``tmp/ssh-stall.pids``
      (see ``stalled_ssh_pids``) so the caller can end it by pid;
    * after ``LIFETIME`` seconds in any case (coreutils ``timeout``).

    A test that runs it must end it one of these ways before it returns
    (closing the dulwich client is enough)."""
    tmp.mkdir(parents=True, exist_ok=True)
    script = tmp / "ssh-stall"
    pids = tmp / "ssh-stall.pids"
    script.write_text(
        "#!/bin/sh\n"
        "# stands in for ssh: swallows the request, never answers\n"
        f"echo $$ >> {shlex.quote(str(pids))}\n"
        "# fd 3 keeps the client's stdout pipe open: it reads no EOF, only silence\n"
        f"exec timeout {int(LIFETIME)} cat 3>&1 > /dev/null\n"
    )
    script.chmod(0o755)
    return shlex.quote(str(script))


def stalled_ssh_pids(tmp: Path) -> list[int]:
    """The pids of every run of ``stalling_ssh_command(tmp)`` so far."""
    pids = tmp / "ssh-stall.pids"
    return [int(line) for line in pids.read_text().split()] if pids.exists() else []
