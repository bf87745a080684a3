"""`syncd status`, the metrics file and sd_notify's datagrams."""

from __future__ import annotations

import io
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.cli.main import main
from syncd.node.metrics import render
from syncd.node.notify import Notifier
from syncd.node.state import Health, State
from tests.syncenv import Hub, Node, admin_and_signers, make_node


def status(node: Node, *args: str, code: int = 0) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "-c", str(node.config), *args], out, err) == code, out.getvalue() + err.getvalue()
    return out.getvalue()


def health(node: Node, code: int) -> dict[str, Any]:
    doc = json.loads(status(node, "--format", "json", code=code))
    assert doc["healthy"] is (code == 0)
    assert isinstance(doc, dict)
    return doc


def setup(tmp_path: Path, metrics: Path | None = None) -> tuple[Hub, Node]:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    if metrics is None:
        return hub, make_node(tmp_path / "node", str(hub.server), signers)
    return hub, make_node(tmp_path / "node", str(hub.server), signers, metrics_file=str(metrics))


def test_status_before_and_after_a_sync(tmp_path: Path) -> None:
    hub, node = setup(tmp_path)
    text = status(node, code=1)
    assert text.splitlines()[0] == "syncd inet6 NOT HEALTHY: never synced | failures=0 drift=0"
    assert "applied:    nothing yet" in text and "last pass:  never synced" in text
    assert f"  try: syncd sync -c {node.config}\n" in text
    assert health(node, 1)["problems"] == ["never synced"]
    node.sync()
    text = status(node)
    first = text.splitlines()[0]
    assert first.startswith(f"syncd inet6 OK: {hub.tip[:12]} signed by admin@example.org, committed 20")
    assert first.endswith(" failures=0 drift=0") and " | tip_age=" in first
    assert f"applied:    {hub.tip} signed by admin@example.org" in text
    assert "files:      3 managed" in text and "drift:      none" in text
    doc = json.loads(status(node, "--format", "json"))
    assert doc["files_managed"] == 3 and doc["drift"] == [] and doc["last_error"] is None
    assert doc["healthy"] is True and doc["problems"] == []
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
    doc = health(node, 1)
    assert len(doc["problems"]) == 1
    assert doc["problems"][0].startswith("last pass refused [signature] at 20")
    assert "not signed" in doc["problems"][0] and "\n" not in doc["problems"][0]
    assert doc["drift"] == ["gateway", "my_laptop"]
    assert doc["unmanaged"] == ["local_only"]
    assert doc["other_entries"] == ["notes.txt"]
    assert doc["last_error"]["reason"] == "signature" and "not signed" in doc["last_error"]["message"]
    assert doc["consecutive_failures"] == 1
    text = status(node, code=1)
    assert text.startswith("syncd inet6 NOT HEALTHY: last pass refused [signature]")
    assert f"  try: syncd sync -c {node.config} --dry-run\n" in text
    assert "drift:      gateway, my_laptop" in text and "last error:" in text and "[signature]" in text


def test_a_failed_pass_is_unhealthy_until_a_pass_succeeds(tmp_path: Path) -> None:
    hub, node = setup(tmp_path)
    assert node.sync()[0] == 0
    moved = hub.server.with_name("moved.git")
    hub.server.rename(moved)
    assert node.sync()[0] == 2  # the repository path names nothing now
    problems = health(node, 1)["problems"]
    assert len(problems) == 1 and problems[0].startswith("last pass failed [config]")
    assert "] at 20" in problems[0] and str(hub.server) in problems[0]
    moved.rename(hub.server)
    assert node.sync()[0] == 0
    health(node, 0)


def test_reload_pending_is_unhealthy(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers, tinc__reload="command", tinc__command=["false"])
    assert node.sync()[0] == 3  # installed, but the reload failed
    problems = health(node, 1)["problems"]
    assert problems[0].startswith("last pass failed [reload-failed]")
    assert problems[1] == "reload pending: tincd has not taken the installed host files yet"
    first = status(node, code=1).splitlines()[0]
    assert first.startswith("syncd inet6 NOT HEALTHY: last pass failed [reload-failed] at ")
    assert " -- reload pending: tincd has not taken the installed host files yet | tip_age=" in first
    assert first.endswith(" failures=1 drift=0")


@pytest.mark.parametrize(("max_age", "code"), [("30d", 1), ("3650d", 0), (None, 0)])
def test_a_tip_older_than_max_age_is_stale(tmp_path: Path, max_age: str | None, code: int) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    hub.change("the last signed commit, long ago", lambda w: None, date="2024-06-01T00:00:00Z")
    extra = {} if max_age is None else {"trust__max_age": max_age}
    node = make_node(tmp_path / "node", str(hub.server), signers, **extra)
    assert node.sync()[0] == 0
    doc = health(node, code)
    assert doc["tip_age_seconds"] > 86400 * 100
    if code:
        (problem,) = doc["problems"]
        assert problem.startswith("stale: the applied commit was committed ")
        assert "more than trust.max_age (30d)" in problem
        assert status(node, code=1).startswith("syncd inet6 NOT HEALTHY: stale: ")


def test_config_error_is_exit_2(tmp_path: Path) -> None:
    _, node = setup(tmp_path)
    node.config.chmod(0o664)
    err = io.StringIO()
    assert main(["status", "-c", str(node.config)], io.StringIO(), err) == 2
    assert "writable by group (mode 0664)" in err.getvalue()


def test_unreadable_state_is_never_advised_away(tmp_path: Path) -> None:
    _, node = setup(tmp_path)
    node.sync()
    (node.state / "state.json").write_text("{not json")
    err = io.StringIO()
    assert main(["status", "-c", str(node.config)], io.StringIO(), err) == 2
    assert "unreadable state" in err.getvalue()
    assert "move it away" not in err.getvalue() and "rm " not in err.getvalue()


@pytest.mark.parametrize(
    ("commit_time", "max_age", "age", "stale"),
    [
        (1_000_000, None, "5000", "0"),
        (1_000_000, 4000.0, "5000", "1"),
        (1_000_000, 5000.0, "5000", "0"),  # exactly max_age: not yet
        (1_010_000, 60.0, "0", "0"),  # a commit from the future
        (None, 60.0, None, None),  # never synced: no age, no verdict
    ],
)
def test_stale_metric(commit_time: int | None, max_age: float | None, age: str | None, stale: str | None) -> None:
    text = render("inet6", State(commit_time=commit_time), Health(), max_age, now=1_005_000)
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines.get('syncd_tip_age_seconds{net="inet6"}') == age
    assert lines.get('syncd_stale{net="inet6"}') == stale
    if stale is not None:
        assert "# TYPE syncd_stale gauge" in text


def test_metrics_file(tmp_path: Path) -> None:
    metrics = tmp_path / "textfile" / "syncd_inet6.prom"
    hub, node = setup(tmp_path, metrics)
    node.sync()
    text = metrics.read_text()
    assert 'syncd_files_managed{net="inet6"} 3' in text
    assert 'syncd_consecutive_failures{net="inet6"} 0' in text
    assert "# TYPE syncd_reloads_total counter" in text
    assert 'syncd_last_success_timestamp_seconds{net="inet6"}' in text
    assert "# TYPE syncd_pass_duration_seconds gauge" in text
    hub.change("unsigned", lambda w: None, key=None)
    started = time.monotonic()
    node.sync()
    took = time.monotonic() - started
    text = metrics.read_text()
    assert 'syncd_consecutive_failures{net="inet6"} 1' in text
    # a refused pass reports its duration too: more than nothing, less than the whole command
    duration = float(text.split('syncd_pass_duration_seconds{net="inet6"} ', 1)[1].split()[0])
    assert 0 < duration <= took


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

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))  # never read: its queue fills up
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        start = time.monotonic()
        for _ in range(5000):
            notifier.watchdog()
        assert time.monotonic() - start < 5
