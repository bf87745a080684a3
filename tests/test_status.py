"""`syncd status`, the metrics file and sd_notify's datagrams."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

from syncd.cli import main
from syncd.notify import Notifier
from tests.syncenv import Hub, Node, admin_and_signers, make_node


def status(node: Node, *args: str) -> str:
    out = io.StringIO()
    assert main(["status", "-c", str(node.config), *args], out, io.StringIO()) == 0
    return out.getvalue()


def setup(tmp_path: Path, metrics: Path | None = None) -> tuple[Hub, Node]:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    if metrics is None:
        return hub, make_node(tmp_path / "node", str(hub.server), signers)
    return hub, make_node(tmp_path / "node", str(hub.server), signers, metrics_file=str(metrics))


def test_status_before_and_after_a_sync(tmp_path: Path) -> None:
    hub, node = setup(tmp_path)
    assert "applied:    nothing yet" in status(node)
    node.sync()
    text = status(node)
    assert f"applied:    {hub.tip} signed by admin@example.org" in text
    assert "files:      3 managed" in text and "drift:      none" in text
    doc = json.loads(status(node, "--format", "json"))
    assert doc["files_managed"] == 3 and doc["drift"] == [] and doc["last_error"] is None
    assert doc["last_pass"]["outcome"] == "applied"


def test_status_shows_drift_unmanaged_files_and_the_last_error(tmp_path: Path) -> None:
    hub, node = setup(tmp_path)
    node.sync()
    (node.hosts / "gateway").write_text("tampered\n")
    (node.hosts / "my_laptop").unlink()
    (node.hosts / "local_only").write_text("x\n")
    (node.hosts / "notes.txt").write_text("x\n")
    hub.change("unsigned", lambda w: None, key=None)
    assert node.sync()[0] == 1
    doc = json.loads(status(node, "--format", "json"))
    assert doc["drift"] == ["gateway", "my_laptop"]
    assert doc["unmanaged"] == ["local_only"]
    assert doc["other_entries"] == ["notes.txt"]
    assert doc["last_error"]["reason"] == "signature" and "not signed" in doc["last_error"]["message"]
    assert doc["consecutive_failures"] == 1
    text = status(node)
    assert "drift:      gateway, my_laptop" in text and "last error:" in text and "[signature]" in text


def test_metrics_file(tmp_path: Path) -> None:
    metrics = tmp_path / "textfile" / "syncd_inet6.prom"
    hub, node = setup(tmp_path, metrics)
    node.sync()
    text = metrics.read_text()
    assert 'syncd_files_managed{net="inet6"} 3' in text
    assert 'syncd_consecutive_failures{net="inet6"} 0' in text
    assert "# TYPE syncd_reloads_total counter" in text
    assert 'syncd_last_success_timestamp_seconds{net="inet6"}' in text
    hub.change("unsigned", lambda w: None, key=None)
    node.sync()
    assert 'syncd_consecutive_failures{net="inet6"} 1' in metrics.read_text()


def test_notifier_sends_datagrams(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        assert notifier.watchdog_interval == 15.0
        notifier.ready("up")
        notifier.watchdog()
        assert sock.recv(100) == b"READY=1\nSTATUS=up"
        assert sock.recv(100) == b"WATCHDOG=1"
    silent = Notifier({})
    assert not silent.enabled and silent.watchdog_interval is None
    silent.ready("nobody listens")  # no socket: nothing happens


def test_notifier_never_blocks_on_a_full_socket(tmp_path: Path) -> None:
    import time

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))  # never read: its queue fills up
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        start = time.monotonic()
        for _ in range(5000):
            notifier.watchdog()
        assert time.monotonic() - start < 5
