"""Untrusted mirrors: every URL is asked for its tip, the newest one that
passes every rule is applied, and a URL that serves an older tip, a fork, a
frozen tip, an empty pack or nothing costs only its own answer
(docs/trust.md, "Mirrors").  Real git servers on loopback: the honest
``git daemon`` (tests/servers.py) and the hostile git:// server
(tests/hostile/)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.hostile import hostile_git
from tests.syncenv import Hub
from tests.test_faults import Frozen, add_host, health, node_at


def applied(node_state: Path) -> str:
    value: str = json.loads((node_state / "state.json").read_text())["last_applied"]
    return value


def test_an_empty_pack_is_a_transient_failure_naming_the_url(hub: Hub, tmp_path: Path) -> None:
    """A server that advertises a real signed tip and sends an empty pack."""
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    tip = hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    frozen = Frozen(node)
    with hostile_git(hub.server, "phantom", tip=tip) as url:
        node.config.write_text(node.config.read_text().replace(str(hub.server), url))
        code, _, err = node.sync()
    assert code == 3, err
    assert "internal error" not in err and url in err and tip[:12] in err, err
    assert health(node)["last_error_reason"] == "fetch-failed"
    frozen.assert_unchanged()


def test_a_symlinked_hosts_directory_is_never_written_through(hub: Hub, tmp_path: Path) -> None:
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("not syncd's\n")
    real = node.hosts.with_name("hosts.real")
    node.hosts.rename(real)
    node.hosts.symlink_to(elsewhere)
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    for args in ((), ("--dry-run",)):
        code, _, err = node.sync(*args)
        assert code == 2, err
        assert str(node.hosts) in err and "symlink" in err, err
    assert [p.name for p in elsewhere.iterdir()] == ["keep"]
    assert health(node)["last_error_reason"] == "io-error"
    # a file where the directory should be: the same
    node.hosts.unlink()
    node.hosts.write_text("")
    code, _, err = node.sync()
    assert code == 2 and str(node.hosts) in err and "not a directory" in err, err
    # the directory back: the next pass converges
    node.hosts.unlink()
    real.rename(node.hosts)
    code, _, err = node.sync()
    assert code == 0, err
    assert applied(node.state) == hub.tip
