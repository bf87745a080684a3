"""A swarm of real `syncd run` agents on loopback addresses, one git daemon.

Node *i* (``node<i>``) has its own tinc and state directories and config
(``interval: 300``), and its host file names its agent's address in
127.0.0.0/8 with a ``# syncd-notify:`` line; every agent listens on the same
UDP port, each on its own address.  Everything runs on 127.0.0.0/8; agents
are stopped by pid, every wait is bounded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from syncd.cli.main import main
from syncd.tinc.keys import tinc_b64encode
from tests.gitutil import SshKey, allowed_signers, commit, git, make_key
from tests.servers import free_port, git_daemon

NET = "swarm"
ROOT = Path(__file__).resolve().parents[1]


def address(i: int) -> str:
    """Node i's agent address: 127.X.Y.Z, X from the pid so parallel runs differ."""
    return f"127.{100 + os.getpid() % 100}.{i >> 8}.{(i & 255) + 1}"


def host_file(i: int, extra: str = "") -> str:
    raw = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([i % 256, i >> 8]) * 16).public_key()
    key = raw.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return (
        f"# syncd-notify: {address(i)}\nSubnet = 10.{i >> 8}.{i & 255}.0/24\n"
        f"Ed25519PublicKey = {tinc_b64encode(key)}\n{extra}"
    )


class Swarm:
    def __init__(self, root: Path, count: int, *, min_gap: float = 1.0, fanout: int = 5) -> None:
        self.root = root
        self.notify_extra: dict[int, str] = {}  # more keys of node i's notify section (YAML flow mapping)
        self.count = count
        self.port = free_port()
        self.min_gap = min_gap
        self.fanout = fanout
        self.admin = make_key(root / "keys", "admin")
        self.signers = allowed_signers(root / "keys" / "allowed_signers", (self.admin, 'namespaces="git"'))
        self.server = root / "srv" / "hosts.git"
        self.work = root / "work"
        self.agents: dict[int, subprocess.Popen[bytes]] = {}
        self.url = ""

    # --- the repository -------------------------------------------------------------------

    def build(self) -> str:
        self.server.parent.mkdir(parents=True)
        git(self.server.parent, "init", "-q", "--bare", "-b", "main", str(self.server))
        (self.work / "hosts").mkdir(parents=True)
        (self.work / "syncd.yaml").write_text("tinc: '1.1'\nprefixes: [10.0.0.0/8]\n")
        for i in range(self.count):
            (self.work / "hosts" / f"node{i}").write_text(host_file(i))
        git(self.work, "init", "-q", "-b", "main")
        git(self.work, "remote", "add", "origin", str(self.server))
        return self.push(f"{self.count} nodes")

    def push(self, message: str, key: SshKey | None = None, change: int | None = None) -> str:
        """Commit (changing node ``change``'s host file), signed by ``key`` (the admin), and force-push."""
        if change is not None:
            path = self.work / "hosts" / f"node{change}"
            path.write_text(path.read_text() + f"# {message}\n")
        sha = commit(self.work, message, key or self.admin, allow_empty=True)
        git(self.work, "push", "-q", "--force", "origin", "HEAD:main")
        return sha

    def hook(self, argv: list[str]) -> None:
        """The bare repository's post-receive hook runs ``syncd notify ARGV --post-receive``."""
        hook = self.server / "hooks" / "post-receive"
        command = " ".join([sys.executable, "-m", "syncd", "notify", *argv, "--post-receive"])
        hook.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {command}\n")
        hook.chmod(0o755)

    # --- the nodes ------------------------------------------------------------------------

    def node_dir(self, i: int) -> Path:
        return self.root / "nodes" / f"node{i}"

    def config(self, i: int) -> Path:
        return self.node_dir(i) / "syncd.yaml"

    def setup_node(self, i: int) -> None:
        """Node i's directories and config, and its first sync (in this process)."""
        node = self.node_dir(i)
        (node / "tinc").mkdir(parents=True)
        (node / "tinc" / "tinc.conf").write_text(f"Name = node{i}\n")
        self.config(i).write_text(
            f"net: {NET}\nnode: node{i}\nrepo: {{url: '{self.url}/hosts.git'}}\n"
            f"trust: {{allowed_signers: '{self.signers}'}}\n"
            f"tinc: {{dir: '{node / 'tinc'}', reload: none}}\nstate_dir: '{node / 'state'}'\ninterval: 300\n"
            f"metrics_file: '{node / 'metrics.prom'}'\n"
            f"notify: {{port: {self.port}, min_gap: {self.min_gap}, fanout: {self.fanout}"
            f"{self.notify_extra.get(i, '')}}}\n"
        )
        self.config(i).chmod(0o644)
        out, err = io.StringIO(), io.StringIO()
        code = main(["sync", "-c", str(self.config(i))], out, err)
        assert code == 0, err.getvalue()

    def start(self, i: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with (self.node_dir(i) / "agent.log").open("ab") as log:
            self.agents[i] = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(self.config(i))],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )

    def events(self, i: int) -> list[dict[str, object]]:
        path = self.node_dir(i) / "agent.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line[3:]) for line in lines if line.startswith("<")]

    def listening(self, i: int) -> bool:
        names = {e["event"] for e in self.events(i)}
        return "notify.listening" in names and bool(names & {"sync.unchanged", "sync.applied"})

    def applied(self, i: int) -> object:
        try:
            return json.loads((self.node_dir(i) / "state" / "state.json").read_text()).get("last_applied")
        except (OSError, ValueError):
            return None

    def sent(self, i: int) -> int:
        return sum(int(str(e["sent"])) for e in self.events(i) if e["event"] == "notify.sent")

    def rss_kib(self, i: int) -> int:
        for line in Path(f"/proc/{self.agents[i].pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        for proc in self.agents.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.agents.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def push_and_measure(sw: Swarm, told: int, timeout: float = 20.0) -> tuple[dict[int, float], dict[int, int]]:
    """One push whose post-receive hook tells agent ``told`` only: seconds
    from the push until each agent applied it, and notifications each sent."""
    sw.hook(["--net", NET, "--to", f"{address(told)}:{sw.port}"])
    pushed = time.monotonic()
    sha = sw.push(f"a change to node{(told + 1) % sw.count}", change=(told + 1) % sw.count)
    times: dict[int, float] = {}
    while len(times) < len(sw.agents) and time.monotonic() < pushed + timeout:
        for i in sw.agents:
            if i not in times and sw.applied(i) == sha:
                times[i] = time.monotonic() - pushed
        time.sleep(0.02)
    time.sleep(1.0)  # the messages sent after the last apply count too
    return times, {i: sw.sent(i) for i in sw.agents}


@contextlib.contextmanager
def swarm(
    root: Path, count: int, started: range | None = None, notify_extra: dict[int, str] | None = None
) -> Iterator[Swarm]:
    """The swarm built, every node synced once, the agents of ``started``
    (default: all) running and listening; stopped by pid afterwards."""
    built = Swarm(root, count)
    built.notify_extra = notify_extra or {}
    built.build()
    with git_daemon(built.server.parent) as url:
        built.url = url
        try:
            for i in range(count):
                built.setup_node(i)
            for i in started if started is not None else range(count):
                built.start(i)
            deadline = time.monotonic() + 60 + count * 2
            while not all(built.listening(i) for i in built.agents):
                dead = [i for i, p in built.agents.items() if p.poll() is not None]
                assert not dead, f"agents exited: {dead}"
                assert time.monotonic() < deadline, "agents did not start listening in time"
                time.sleep(0.1)
            yield built
        finally:
            built.stop()
