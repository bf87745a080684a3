"""On a terminal, a fetch shows the server's progress; off a terminal (a
timer, a pipe) it prints nothing of the kind."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.servers import git_daemon
from tests.syncenv import Hub, admin_and_signers, make_node


def run_on_a_terminal(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=follower, stdout=follower, stderr=follower, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    os.close(follower)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        os.close(leader)


def test_a_fetch_on_a_terminal_shows_the_servers_progress(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    with git_daemon(hub.server.parent) as base:
        node = make_node(tmp_path / "node", f"{base}/hosts.git", signers)
        code, output = run_on_a_terminal([sys.executable, "-m", "syncd", "sync", "-c", str(node.config)])
        assert code == 0, output
        assert "remote: " in output and "objects" in output, output
        assert "applied" in output
        hub.change("another", lambda w: (w / "hosts" / "gateway").open("a").close())
        quiet = subprocess.run(
            [sys.executable, "-m", "syncd", "sync", "-c", str(node.config)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
        assert quiet.returncode == 0 and "remote:" not in quiet.stderr, quiet.stderr
