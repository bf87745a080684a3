"""Reloading a real tincd after a sync (docs/host-files.md, "Reload"):
Debian's 1.0.36 by signal, and tinc 1.1 through its control program."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.cli.main import main
from syncd.errors import ReloadError
from syncd.node.config import TincConfig, load_config
from syncd.node.reload import NOT_RUNNING, choose, is_tincd, read_pid, reload_tinc, running_tincd
from syncd.node.state import STATE_FILE
from syncd.sync.agent import sync_once
from tests import tinc11
from tests.keyfactory import rsa_pem
from tests.syncenv import Hub, Node, admin_and_signers, make_node
from tests.tincd import Tincd, make_tinc_dir, running


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Hub, Node, Tincd]:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers, tinc__reload="signal")
    tinc = make_tinc_dir(node.hosts.parent, "my_pc", "2002:102:304:4::/64")
    # the node's real host file (with the key tincd just made) goes into the repo
    host = tinc.host_file()
    hub.change("my_pc's real key", lambda w: (w / "hosts" / "my_pc").write_text(host))
    config = node.config.read_text().replace("reload: signal", f"reload: signal\n  pidfile: {tinc.pidfile}")
    node.config.write_text(config)
    return hub, node, tinc


def add(name: str, subnet: str, seed: int) -> Callable[[Path], object]:
    return lambda w: (w / "hosts" / name).write_text(f"Subnet = {subnet}\n\n{rsa_pem(seed=seed)}")


def test_one_hup_per_change_none_without(setup: tuple[Hub, Node, Tincd]) -> None:
    hub, node, tinc = setup
    with running(tinc):
        code, out, err = node.sync()
        assert code == 0, err
        assert "reloaded tincd (signal): SIGHUP to tincd pid" in out
        assert _eventually(lambda: tinc.hups() == 1), tinc.log()
        code, out, _ = node.sync()
        assert out.startswith("already current")
        time.sleep(0.3)
        assert tinc.hups() == 1
        hub.change("newbie", add("newbie", "2002:102:304:7::/64", 41))
        assert node.sync()[0] == 0
        assert _eventually(lambda: tinc.hups() == 2), tinc.log()
        assert tinc.alive()


def test_writes_land_in_a_later_second_than_the_last_reload(setup: tuple[Hub, Node, Tincd]) -> None:
    hub, node, tinc = setup
    with running(tinc):
        assert node.sync()[0] == 0
        first_reload = json.loads((node.state / STATE_FILE).read_text())["last_reload"]
        hub.change("newbie", add("newbie", "2002:102:304:7::/64", 41))
        assert node.sync()[0] == 0
        written = (node.hosts / "newbie").stat().st_mtime
        assert math.floor(written) > math.floor(first_reload)
        assert _eventually(lambda: tinc.hups() == 2)


def test_pidfile_of_another_process_is_not_signalled(setup: tuple[Hub, Node, Tincd]) -> None:
    _hub, node, tinc = setup
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        tinc.pidfile.write_text(f"{sleeper.pid}\n")  # a stale pidfile whose pid was reused
        code, out, err = node.sync()
        assert code == 0, err
        assert f"warning: {NOT_RUNNING} ({tinc.pidfile} names pid {sleeper.pid}, which is 'sleep', not tincd" in err
        assert "not signalled" in err
        assert sleeper.poll() is None, "sleep was signalled"
        assert (node.hosts / "gateway").exists(), "the files are installed"
        assert json.loads((node.state / STATE_FILE).read_text())["reload_pending"] is False
    finally:
        sleeper.kill()
        sleeper.wait()
    with running(tinc):  # it read every file when it started: nothing to reload
        code, out, err = node.sync()
        assert code == 0, err
        assert out.startswith("already current") and not err
        time.sleep(0.3)
        assert tinc.hups() == 0


def test_tincd_that_dies_on_reload_is_reported(setup: tuple[Hub, Node, Tincd]) -> None:
    hub, node, tinc = setup
    with running(tinc):
        assert node.sync()[0] == 0
        with (tinc.dir / "tinc.conf").open("a") as fh:
            fh.write("Mode\n")  # a variable without a value: tincd 1.0 cannot re-read tinc.conf
        hub.change("newbie", add("newbie", "2002:102:304:7::/64", 41))
        code, _, err = node.sync()
        assert code == 3
        assert "TINCD EXITED after SIGHUP" in err
        assert not tinc.alive()
        assert json.loads((node.state / STATE_FILE).read_text())["reload_pending"] is True
    # the next pass finds no tincd: the files are in place for its restart
    code, _, err = node.sync()
    assert code == 0, err
    assert f"warning: {NOT_RUNNING}" in err
    assert json.loads((node.state / STATE_FILE).read_text())["reload_pending"] is False


def test_tinc_method_reloads_a_real_tincd_1_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``reload: tinc``: ``tinc -c DIR --pidfile=PIDFILE reload``, tinc 1.1's
    control program, which finds the running tincd's control socket beside
    its pidfile."""
    sbin = tinc11.sbin()
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers, tinc__reload="tinc")
    tinc = make_tinc_dir(node.hosts.parent, "my_pc", "2002:102:304:4::/64", sbin)
    host = tinc.host_file()
    assert "Ed25519PublicKey = " in host and "-----BEGIN RSA PUBLIC KEY-----" in host
    hub.change("my_pc's real keys", lambda w: (w / "hosts" / "my_pc").write_text(host))
    node.config.write_text(node.config.read_text().replace("reload: tinc", f"reload: tinc\n  pidfile: {tinc.pidfile}"))
    monkeypatch.setenv("PATH", f"{sbin}:{os.environ['PATH']}")  # where an operator's tinc 1.1 would be
    code, out, err = node.sync()  # tincd is not running yet: nothing to reload, no failure
    assert (code, f"warning: {NOT_RUNNING} (no {tinc.pidfile})") == (0, err.strip().splitlines()[-1]), out
    with running(tinc):
        hub.change(
            "my_laptop moved",
            lambda w: (w / "hosts" / "my_laptop").write_text((w / "hosts" / "my_laptop").read_text() + "# moved\n"),
        )
        code, out, err = node.sync()
        assert code == 0, err
        assert f"reloaded tincd (tinc): tinc -c {tinc.dir} --pidfile={tinc.pidfile} reload" in out
        assert _eventually(lambda: tinc11.reloads(tinc.log()) == 1), tinc.log()
        assert node.sync()[1].startswith("already current")
        hub.change("newbie", add("newbie", "2002:102:304:7::/64", 41))
        assert node.sync()[0] == 0
        assert _eventually(lambda: tinc11.reloads(tinc.log()) == 2), tinc.log()
        assert tinc.log().count("Got 'reload' command") == 2 and tinc.alive()


def test_pid_helpers(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    pidfile.write_text("1234 cookie 127.0.0.1 port 655\n")  # tinc 1.1's format
    assert read_pid(pidfile) == 1234
    pidfile.write_text("garbage")
    assert read_pid(pidfile) is None
    assert read_pid(tmp_path / "missing") is None
    pidfile.write_text("0\n")  # kill(0, ...) would signal syncd's own process group
    assert read_pid(pidfile) is None
    assert not is_tincd(os.getpid())
    pidfile.write_text(f"{os.getpid()}\n")
    reason = running_tincd(pidfile)
    assert isinstance(reason, str) and reason.startswith(f"{pidfile} names pid {os.getpid()}, which is '")
    assert reason.endswith("not tincd: a stale pidfile, not signalled")


def test_command_and_none_methods(tmp_path: Path) -> None:
    marker = tmp_path / "reloaded"
    command = TincConfig(tmp_path, "command", None, ("sh", "-c", f"echo ok > {marker}"))
    assert reload_tinc(command, "inet6").method == "command"
    assert marker.read_text() == "ok\n"
    failing = TincConfig(tmp_path, "command", None, ("sh", "-c", "echo broken >&2; exit 4"))
    with pytest.raises(ReloadError, match="exited 4: broken"):
        reload_tinc(failing, "inet6")
    assert reload_tinc(TincConfig(tmp_path, "none"), "inet6").method == "none"


def test_auto_picks_signal_for_a_running_tincd(setup: tuple[Hub, Node, Tincd]) -> None:
    _, _, tinc = setup
    auto = TincConfig(tinc.dir, "auto", tinc.pidfile)
    with running(tinc):
        assert choose(auto, "inet6") == "signal"
    assert choose(auto, "inet6") != "signal"  # stopped: its pid is gone


@pytest.mark.parametrize("pidfile_text", [None, "", "\n", "dead"])
def test_signal_with_tincd_not_running_installs_and_warns(tmp_path: Path, pidfile_text: str | None) -> None:
    """First boot: files first, then tincd.  No pidfile, an empty one, or
    the pid of a process that is gone: exit 0, a warning, nothing pending."""
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    pidfile = tmp_path / "run" / "tinc.inet6.pid"
    node = make_node(tmp_path / "node", str(hub.server), signers, tinc__reload="signal", tinc__pidfile=str(pidfile))
    if pidfile_text is not None:
        pidfile.parent.mkdir()
        pidfile.write_text(f"{gone_pid()}\n" if pidfile_text == "dead" else pidfile_text)
    code, out, err = node.sync()
    assert code == 0, err
    assert f"warning: {NOT_RUNNING} (" in err
    assert "tincd not reloaded" in out
    assert sorted(node.files()) == ["gateway", "my_laptop", "my_pc"]
    saved = json.loads((node.state / STATE_FILE).read_text())
    assert saved["reload_pending"] is False and saved["reloads"] == 0 and saved["last_reload"] is None

    hub.change("newbie", add("newbie", "2002:102:304:7::/64", 41))
    result = sync_once(load_config(node.config))
    assert result.status == "applied"
    assert [w for w in result.warnings if w.startswith(NOT_RUNNING)], result.warnings
    assert result.reloaded is not None and result.reloaded.method == "none"
    health = json.loads((node.state / "health.json").read_text())
    assert health["last_outcome"] == "applied" and health["failures"] == 0


def test_sync_log_says_tincd_is_not_running(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    pidfile = tmp_path / "tinc.inet6.pid"
    node = make_node(tmp_path / "node", str(hub.server), signers, tinc__reload="signal", tinc__pidfile=str(pidfile))
    err = io.StringIO()
    assert main(["sync", "--log", "-c", str(node.config)], io.StringIO(), err) == 0, err.getvalue()
    events = [json.loads(line[3:]) for line in err.getvalue().splitlines()]
    warnings = [e for e in events if e["level"] == "warning"]
    assert [e["finding"] for e in warnings] == [f"{NOT_RUNNING} (no {pidfile})"]
    assert "<4>" in err.getvalue()  # journald's warning priority
    assert not [e for e in events if e["event"] in ("reload.failed", "reload.done")]


def test_a_pidfile_that_is_not_tincds_is_an_error(tmp_path: Path) -> None:
    pidfile = tmp_path / "tinc.pid"
    pidfile.write_text("<html>\n")
    with pytest.raises(ReloadError, match="'<html>' is not a tincd pidfile"):
        reload_tinc(TincConfig(tmp_path, "signal", pidfile), "inet6")


def test_a_fifo_as_pidfile_does_not_block(tmp_path: Path) -> None:
    pidfile = tmp_path / "tinc.pid"
    os.mkfifo(pidfile)
    outcome: list[object] = []

    def attempt() -> None:
        try:
            outcome.append(reload_tinc(TincConfig(tmp_path, "signal", pidfile), "inet6"))
        except ReloadError as exc:
            outcome.append(exc.message)

    worker = threading.Thread(target=attempt, daemon=True)  # a regression blocks it, not the test run
    worker.start()
    worker.join(10)
    assert outcome == [f"{pidfile}: cannot read tincd's pidfile: not a regular file"]
    assert read_pid(pidfile) is None


def test_auto_without_any_tincd_warns(tmp_path: Path) -> None:
    if shutil.which("tinc"):
        pytest.skip("tinc 1.1's control program is installed: auto picks it")
    reloaded = reload_tinc(TincConfig(tmp_path, "auto", tmp_path / "tinc.pid"), "syncd-test-no-such-net")
    assert reloaded.method == "none"
    assert reloaded.warning is not None and reloaded.warning.startswith(NOT_RUNNING)


def test_a_failed_reload_stays_pending_and_is_retried(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    ready = tmp_path / "ready"
    command = ["sh", "-c", f'test -e "{ready}" || {{ echo not yet >&2; exit 1; }}']
    node = make_node(tmp_path / "node", str(hub.server), signers, tinc__reload="command", tinc__command=command)
    code, _, err = node.sync()
    assert code == 3 and "exited 1: not yet" in err
    assert json.loads((node.state / STATE_FILE).read_text())["reload_pending"] is True
    ready.touch()
    code, out, err = node.sync()
    assert code == 0, err
    assert "reloaded tincd (command)" in out and "pending from an earlier pass" in out
    saved = json.loads((node.state / STATE_FILE).read_text())
    assert saved["reload_pending"] is False and saved["reloads"] == 1


def gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())
