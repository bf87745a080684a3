"""An all-tinc-1.1 network, for real: the "IPv6 everywhere" network with
every node on tinc 1.1, Ed25519 keys only (no RSA key anywhere, so every
connection is tinc 1.1's own protocol), a `tinc: "1.1"` policy, and every
tincd reloaded with `tinc reload` (`reload: tinc`).  Every host file names
its node's key: tincd has nothing to learn and appends nothing.  The tests
run in order on one network.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.checks import (
    MEMBERS,
    closures,
    events,
    join_measured,
    nodes,
    outcome,
    stop_cleanly,
    tinc11_network,
)
from tests.e2e.lab import wait_for
from tests.e2e.network import Flavour, IPv6Everywhere

pytestmark = pytest.mark.e2e

ONLY = Flavour(policy_tinc="1.1", tinc11=frozenset({*MEMBERS, "newbie"}), ed25519_only=True)
TINC_WROTE = b"automatically added by tinc"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IPv6Everywhere]:
    yield from tinc11_network(tmp_path_factory, ONLY)


def test_ed25519_only_nodes_reach_each_other(net: IPv6Everywhere) -> None:
    members = nodes(net, *MEMBERS)
    for src in members:
        for dst in members:
            if src is not dst:
                assert net.reachable(src, dst, 45) is not None, f"{src.name} cannot reach {dst.name}"
    for node in members:
        assert node.version == "1.1" and not (node.tinc_dir / "rsa_key.priv").exists()
        assert (node.tinc_dir / "ed25519_key.priv").exists()
        for host in (node.tinc_dir / "hosts").iterdir():
            text = host.read_bytes()
            assert b"Ed25519PublicKey = " in text and b"RSA PUBLIC KEY" not in text, (node.name, host.name)
            assert TINC_WROTE not in text, (node.name, host.name)
    assert all(net.same_tincd().values())


def test_a_newcomer_joins_and_every_tincd_is_reloaded_with_tinc_reload(net: IPv6Everywhere) -> None:
    members = nodes(net, *MEMBERS)
    closed_before = closures(net)
    clone = net.clone("newbie")
    newbie = net.join_with_add_node("newbie", "198.51.100.3", net.inet, clone)
    key = net.owner_key("newbie")
    for host in (clone / "hosts" / "newbie", newbie.tinc_dir / "hosts" / "newbie"):
        if not host.read_text().startswith("# syncd-owner:"):
            host.write_text(net.owner_line(key) + "\n" + host.read_text())
    text = (clone / "hosts" / "newbie").read_text()
    assert "Ed25519PublicKey = " in text and "RSA PUBLIC KEY" not in text  # add-node under tinc: "1.1"
    label = "tinc 1.1 only (Ed25519 keys, reload: tinc), newbie's join"
    join_measured(net, newbie, lambda: net.push("Add newbie", key=key, repo=clone), label)
    for node in members:
        done = [e for e in events(node) if e["event"] == "reload.done"]
        assert done and {e["method"] for e in done} == {"tinc"}, (node.name, done)
        assert "Got 'reload' command" in node.log(), node.name
    # only newbie's file is new: the reloads dropped none of the meta connections
    # (each node's with the gateway; tinc 1.1's AutoConnect attempts between
    # my_pc and my_laptop through their NAT fail, and are not counted)
    for node in members:
        peers = [m for m in MEMBERS if m != node.name] if node.gateway else ["gateway"]
        dropped = [
            line
            for line in node.closed_connections()[closed_before[node.name] :]
            if any(f"Closing connection with {peer} " in line for peer in peers)
        ]
        assert not dropped, (node.name, dropped)
    assert all(net.same_tincd().values())
    net.start_agent(newbie)
    assert wait_for(lambda: outcome(newbie) == "unchanged", 20) is not None
    for node in (*members, newbie):
        assert not any(TINC_WROTE in host.read_bytes() for host in (node.tinc_dir / "hosts").iterdir())


def test_agents_stop_cleanly(net: IPv6Everywhere) -> None:
    for node in nodes(net, *MEMBERS, "newbie"):
        stop_cleanly(net, node)
