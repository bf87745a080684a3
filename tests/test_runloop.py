"""`syncd run` as a real process: push-to-installed latency, drift repair,
SIGHUP, SIGTERM, sd_notify and JSON log lines."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.figures import record
from tests.keyfactory import rsa_pem
from tests.servers import free_port, git_daemon
from tests.syncenv import Hub, Node, admin_and_signers, make_node

INTERVAL = 2


def wait_until(check: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``check()`` held, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


class Agent:
    def __init__(self, node: Node, tmp: Path, interval: int = INTERVAL) -> None:
        self.node = node
        self.notify_path = tmp / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.notify_path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []
        self.log_path = tmp / "agent.log"
        config = node.config.read_text().replace("interval: 300", "")
        # no notifications: the test's host files name documentation addresses, not loopback
        node.config.write_text(config + f"interval: {interval}\nnotify: {{listen: [], fanout: 0}}\n")
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify_path), "WATCHDOG_USEC": "1000000"}
        self.log_file = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(node.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log_file,
            env=env,
        )

    def received(self) -> list[str]:
        while self.sock.fileno() >= 0:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                break
        return self.messages

    def events(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line[3:]) for line in lines if line.startswith("<")]

    def has_event(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=5)
        self.received()  # what it said on the way out
        self.sock.close()
        self.log_file.close()
        return code


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Hub, Node, Agent]]:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers)
    running = Agent(node, tmp_path)
    try:
        assert wait_until(lambda: any("READY=1" in m for m in running.received()), 20) is not None, (
            running.log_path.read_text()
        )
        yield hub, node, running
    finally:
        running.stop()


def add(name: str, subnet: str, seed: int) -> Callable[[Path], object]:
    return lambda w: (w / "hosts" / name).write_text(f"Subnet = {subnet}\n\n{rsa_pem(seed=seed)}")


def test_push_is_installed_within_the_interval(agent: tuple[Hub, Node, Agent]) -> None:
    hub, node, running = agent
    assert (node.hosts / "gateway").exists()
    latencies = []
    for i in range(2):
        hub.change(f"newbie{i}", add(f"newbie{i}", f"2002:102:304:{7 + i}::/64", 50 + i))
        latency = wait_until(lambda i=i: (node.hosts / f"newbie{i}").exists(), INTERVAL * 1.1 + 2)  # type: ignore[misc]
        assert latency is not None, running.log_path.read_text()
        latencies.append(latency)
    record(f"syncd run: push-to-installed with interval {INTERVAL} s", ", ".join(f"{x:.2f} s" for x in latencies))
    assert running.has_event("sync.applied")
    assert any(m.startswith("STATUS=applied") or "\nSTATUS=applied" in m for m in running.received())


def test_tampered_and_deleted_files_are_restored(agent: tuple[Hub, Node, Agent]) -> None:
    _, node, running = agent
    original = (node.hosts / "gateway").read_bytes()
    (node.hosts / "gateway").write_text("Subnet = ::/0\n")
    restored = wait_until(lambda: (node.hosts / "gateway").read_bytes() == original, 2)
    assert restored is not None, running.log_path.read_text()
    (node.hosts / "my_laptop").unlink()
    assert wait_until(lambda: (node.hosts / "my_laptop").exists(), 2) is not None
    assert wait_until(lambda: running.has_event("drift.repaired"), 2) is not None
    record("syncd run: tampered host file restored after", f"{restored:.2f} s")
    (node.hosts / "local_note").write_text("Subnet = 10.9.9.9\n")  # not managed: left alone
    time.sleep(0.5)
    assert (node.hosts / "local_note").exists()


def test_sighup_syncs_now_and_sigterm_exits_0(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers)
    running = Agent(node, tmp_path, interval=300)
    try:
        assert wait_until(lambda: any("READY=1" in m for m in running.received()), 20) is not None
        hub.change("newbie", add("newbie", "2002:102:304:7::/64", 60))
        time.sleep(0.3)
        assert not (node.hosts / "newbie").exists()
        running.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: (node.hosts / "newbie").exists(), 3) is not None
        assert wait_until(lambda: any(m == "WATCHDOG=1" for m in running.received()), 2) is not None
    finally:
        code = running.stop()
    assert code == 0
    assert any("STOPPING=1" in m for m in running.messages)
    events = running.events()
    assert events[0]["event"] == "run.started" and events[-1]["event"] == "run.stopped"
    for line in running.log_path.read_text().splitlines():
        assert line.startswith(("<3>", "<4>", "<6>")), line
        json.loads(line[3:])


def test_transient_failures_back_off_exponentially_up_to_the_interval(tmp_path: Path) -> None:
    from syncd.node.config import parse_config
    from syncd.sync.runloop import RunLoop

    _admin, signers = admin_and_signers(tmp_path / "keys")
    config = parse_config(
        {
            "net": "inet6",
            "node": "my_pc",
            "repo": {"url": f"git://127.0.0.1:{free_port()}/hosts.git"},  # nothing listens there
            "trust": {"allowed_signers": str(signers)},
            "tinc": {"dir": str(tmp_path / "tinc"), "reload": "none"},
            "state_dir": str(tmp_path / "state"),
            "interval": 30,
        }
    )

    class Log:
        def __init__(self) -> None:
            self.events: list[str] = []

        def __getattr__(self, level: str) -> Callable[..., None]:
            return lambda event, **_: self.events.append(event)

    log = Log()
    loop = RunLoop(config, log)
    delays = [loop._pass(fetch=True) for _ in range(5)]
    assert delays == [5.0, 10.0, 20.0, 30.0, 30.0]
    assert log.events == ["sync.failed"] * 5
    assert loop.failures == 5


def test_an_unexpected_error_does_not_stop_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from syncd.node.config import parse_config
    from syncd.sync import runloop

    _admin, signers = admin_and_signers(tmp_path / "keys")
    config = parse_config(
        {
            "net": "inet6",
            "node": "my_pc",
            "repo": {"url": "unused"},
            "trust": {"allowed_signers": str(signers)},
            "state_dir": str(tmp_path / "state"),
            "interval": 60,
        }
    )

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("dulwich surprise")

    monkeypatch.setattr(runloop, "sync_once", broken)
    events: list[tuple[str, str, dict[str, object]]] = []

    class Log:
        def __getattr__(self, level: str) -> Callable[..., None]:
            return lambda event, **fields: events.append((level, event, fields))

    loop = runloop.RunLoop(config, Log())
    assert loop._pass(fetch=True) == 5.0
    took = events[0][2].pop("duration_s")  # a failed pass says how long it took too
    assert isinstance(took, float) and 0 <= took < 5
    assert events == [
        (
            "critical",
            "sync.failed",
            {
                "net": "inet6",
                "reason": "internal-error",
                "error": "internal error: ValueError: dulwich surprise",
                "hint": "this is a bug in syncd: please report it with this message "
                "(`SYNCD_DEBUG=1 syncd sync` shows the traceback)",
                "failures": 1,
                "trigger": "poll",
            },
        )
    ]


def test_the_agent_retries_a_failed_fetch_soon(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    served = tmp_path / "served"
    served.mkdir()
    with git_daemon(served) as url:  # serving nothing yet
        node = make_node(tmp_path / "node", f"{url}/hosts.git", signers)
        running = Agent(node, tmp_path, interval=300)
        try:
            assert wait_until(lambda: any("READY=1" in m for m in running.received()), 20) is not None
            assert running.has_event("sync.failed")
            hub = Hub(tmp_path / "hub", admin)  # the repository appears; the agent retries after 5 s, not 300
            (served / "hosts.git").symlink_to(hub.server)
            assert wait_until(lambda: (node.hosts / "gateway").exists(), 8) is not None, running.log_path.read_text()
        finally:
            assert running.stop() == 0


def test_a_stalled_fetch_neither_freezes_the_agent_nor_feeds_the_watchdog(tmp_path: Path) -> None:
    """The server accepts and never answers (repo.timeout 60 s): drift is
    still repaired at once, the watchdog is fed only while the fetch is within
    its deadline, and SIGTERM stops the agent within seconds."""
    from syncd.sync.runloop import RunLoop
    from tests.hostile import hostile_git

    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers, repo__timeout=60)
    assert node.sync()[0] == 0
    with hostile_git(hub.server, "stall") as url:
        node.config.write_text(node.config.read_text().replace(str(hub.server), str(url)))
        running = Agent(node, tmp_path, interval=300)
        try:
            assert wait_until(lambda: bool(url.connections), 10) is not None, "the agent never fetched"
            original = (node.hosts / "gateway").read_bytes()
            (node.hosts / "gateway").write_text("Subnet = ::/0\n")
            restored = wait_until(lambda: (node.hosts / "gateway").read_bytes() == original, 5)
            assert restored is not None, running.log_path.read_text()
            assert wait_until(lambda: "WATCHDOG=1" in running.received(), 3) is not None
            started = time.monotonic()
            running.proc.send_signal(signal.SIGTERM)
            code = running.proc.wait(timeout=10)
            stopped = time.monotonic() - started
        finally:
            code = running.stop()
    assert code == 0
    assert stopped < 6, f"SIGTERM took {stopped:.1f} s during a stalled fetch"
    record("syncd run: SIGTERM during a stalled fetch exits after", f"{stopped:.2f} s")
    record("syncd run: drift repaired during a stalled fetch after", f"{restored:.2f} s")

    # the heartbeat's rule, on the loop itself: a fetch past its deadlines or
    # a main loop that stopped ticking is not progress
    from syncd.node.config import load_config

    loop = RunLoop(load_config(node.config), None)
    assert loop.healthy()
    loop.worker = threading.Thread(target=lambda: None)
    loop.fetch_started = time.monotonic() - 59
    assert loop.healthy()
    loop.fetch_started = time.monotonic() - 60 - 121
    assert not loop.healthy()
    loop.worker = None
    loop.progress = time.monotonic() - 60
    assert not loop.healthy()
