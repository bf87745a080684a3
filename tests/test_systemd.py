"""The hardened units in contrib/systemd, scored by systemd-analyze itself."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.figures import record
from tests.servers import require
from tests.syncenv import Hub, admin_and_signers, make_node

UNITS = ROOT / "contrib" / "systemd"


@pytest.mark.parametrize("template", ["syncd@.service", "syncd-run@.service"])
def test_exposure_is_at_most_2_5(template: str, tmp_path: Path) -> None:
    analyze = require("systemd-analyze")
    instance = tmp_path / template.replace("@", "@inet6")
    shutil.copy(UNITS / template, instance)
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(instance)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match[1])
    record(f"systemd-analyze security {instance.name}", f"exposure {score}")
    assert score <= 2.5, result.stdout


def test_units_agree_with_the_cli() -> None:
    oneshot = (UNITS / "syncd@.service").read_text()
    agent = (UNITS / "syncd-run@.service").read_text()
    timer = (UNITS / "syncd@.timer").read_text()
    assert "ExecStart=/usr/local/bin/syncd sync --log -c /etc/syncd/%i.yaml" in oneshot
    assert "Type=oneshot" in oneshot
    assert "ExecStart=/usr/local/bin/syncd run -c /etc/syncd/%i.yaml" in agent
    assert "Type=notify" in agent and "WatchdogSec=" in agent and "Restart=on-failure" in agent
    assert "ExecReload=/bin/kill -HUP $MAINPID" in agent
    for unit in (oneshot, agent):
        assert "ReadWritePaths=/etc/tinc/%i/hosts" in unit and "StateDirectory=syncd/%i" in unit
    assert "OnUnitActiveSec=5min" in timer and "RandomizedDelaySec=" in timer and "Persistent=true" in timer
    for unit in (oneshot, agent):
        # tincd starts on the installed files and is reloaded by the first pass,
        # not held back until a fetch that may need the VPN itself
        assert "After=network-online.target tinc@%i.service" in unit and "Before=" not in unit


def enable(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("systemctl"), f"--root={root}", "enable", *units],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_enable_makes_the_agent_and_the_timer_start_at_boot(tmp_path: Path) -> None:
    # where `make install` puts the units: systemd's directory for local packages
    unitdir = tmp_path / "usr" / "local" / "lib" / "systemd" / "system"
    unitdir.mkdir(parents=True)
    for unit in UNITS.iterdir():
        shutil.copy(unit, unitdir)
    result = enable(tmp_path, "syncd-run@inet6.service", "syncd@inet6.timer")
    assert result.returncode == 0, result.stderr
    assert "no installation config" not in result.stderr
    wants = tmp_path / "etc" / "systemd" / "system"
    agent = wants / "multi-user.target.wants" / "syncd-run@inet6.service"
    timer = wants / "timers.target.wants" / "syncd@inet6.timer"
    assert agent.is_symlink() and agent.readlink() == Path("/usr/local/lib/systemd/system/syncd-run@.service")
    assert timer.is_symlink() and timer.readlink() == Path("/usr/local/lib/systemd/system/syncd@.timer")

    # the one-shot service is started by its timer, never enabled by itself
    oneshot = enable(tmp_path, "syncd@inet6.service")
    assert "no installation config" in oneshot.stderr
    assert sorted(p.name for p in wants.rglob("*") if p.is_symlink()) == [
        "syncd-run@inet6.service",
        "syncd@inet6.timer",
    ]


def test_first_boot_before_tincd_runs_is_not_a_failure(tmp_path: Path) -> None:
    """The units start syncd after tinc@NET; on a new node tincd is not
    running at all yet. A pass then installs the files and succeeds without
    a reload: tincd reads them when it starts."""
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    pidfile = tmp_path / "run" / "tinc.inet6.pid"  # never written: no tincd
    node = make_node(tmp_path / "node", str(hub.server), signers, tinc__reload="auto", tinc__pidfile=str(pidfile))
    code, out, err = node.sync()
    assert code == 0, out + err
    assert "tincd not reloaded (tinc.reload: auto found no running tincd)" in out
    assert sorted(node.files()) == ["gateway", "my_laptop", "my_pc"]
