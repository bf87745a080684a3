"""Reloading a real tincd 1.0.36 after a sync (DESIGN.md §6, TINC.md "Reload")."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.apply import STATE_FILE
from syncd.config import TincConfig
from syncd.errors import ReloadError
from syncd.reload import choose, is_tincd, read_pid, reload_tinc
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
        tinc.pidfile.write_text(f"{sleeper.pid}\n")
        code, _, err = node.sync()
        assert code == 3
        assert f"names pid {sleeper.pid}, which is 'sleep', not tincd: not signalled" in err
        assert sleeper.poll() is None, "sleep was signalled"
        assert (node.hosts / "gateway").exists(), "the files stay installed when the reload fails"
        assert json.loads((node.state / STATE_FILE).read_text())["reload_pending"] is True
    finally:
        sleeper.kill()
        sleeper.wait()
    with running(tinc):  # the pending reload is retried by the next pass
        code, out, err = node.sync()
        assert code == 0, err
        assert "pending from an earlier pass" in out
        assert _eventually(lambda: tinc.hups() == 1)
        assert json.loads((node.state / STATE_FILE).read_text())["reload_pending"] is False


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


def test_pid_helpers(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    pidfile.write_text("1234 cookie 127.0.0.1 port 655\n")  # tinc 1.1's format
    assert read_pid(pidfile) == 1234
    pidfile.write_text("garbage")
    assert read_pid(pidfile) is None
    assert read_pid(tmp_path / "missing") is None
    assert not is_tincd(os.getpid())


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


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())
