"""The mission, for real: the "IPv6 everywhere with tinc" network in network
namespaces, with tincd 1.0 on every node and host files only from syncd.

The tests run in order and share one network (see ``network.py`` for the
topology, ``checks.network`` for what it needs).  tinc 1.1, beside 1.0 and
alone: test_tinc11_mixed.py and test_tinc11_only.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from tests.e2e.checks import (
    applied,
    closures,
    converged,
    has,
    health,
    join_measured,
    network,
    nodes,
    outcome,
    per_node,
    refused,
    stop_cleanly,
)
from tests.e2e.lab import wait_for, wait_for_each
from tests.e2e.network import PREFIX, IPv6Everywhere, Node
from tests.figures import FIGURES
from tests.gitutil import allowed_signers, git

pytestmark = pytest.mark.e2e


# A one-way UDP flow over the VPN, and a sink that answers nothing (see
# test_lan_peers_talk_directly_after_local_discovery).
SINK = (
    "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
    "s.bind(('::', 9999))\nwhile True: s.recv(4096)"
)
SEND = (
    "import socket, sys, time\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
    "while True:\n    s.sendto(b'x' * 64, (sys.argv[1], 9999))\n    time.sleep(0.05)"
)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IPv6Everywhere]:
    with network(tmp_path_factory.mktemp("e2e")) as built:
        yield built


def test_all_nodes_reach_each_other(net: IPv6Everywhere) -> None:
    gw, pc, laptop = nodes(net, "gateway", "my_pc", "my_laptop")
    for src in (gw, pc, laptop):
        for dst in (gw, pc, laptop):
            if src is not dst:
                assert net.reachable(src, dst, 30) is not None, f"{src.name} cannot reach {dst.vpn_ip}"
    # the routes are the ones the signed repository announces
    assert (pc.tinc_dir / "hosts" / "gateway").read_text().count("Subnet = ::/0") == 1
    assert net.same_tincd() == {"gateway": True, "my_pc": True, "my_laptop": True}


def test_lan_peers_talk_directly_after_local_discovery(net: IPv6Everywhere) -> None:
    """my_pc and my_laptop are behind a NAT without hairpinning: their direct
    path exists only once LocalDiscovery has taught each its peer's LAN
    address.  tincd 1.0 learns an unknown UDP source with one "hard" key
    trial per second, which its own LocalDiscovery broadcasts can use up
    when both sides probe at once; so each side is first given a one-way
    flow to learn the other's LAN address, then both ping.  Proof: the
    gateway's link carries nothing while they ping each other."""
    gw, pc, laptop = nodes(net, "gateway", "my_pc", "my_laptop")

    def knows(node: Node, peer: Node) -> bool:
        return f"UDP address of {peer.name} set to {peer.lan_ip} port 655" in node.log()

    def flow(src: Node, dst: Node, seconds: float) -> None:
        """UDP from src to dst over the VPN for up to ``seconds``, until dst knows src."""
        sink = net.lab.spawn(dst.ns, [sys.executable, "-c", SINK])
        sender = net.lab.spawn(src.ns, [sys.executable, "-c", SEND, dst.vpn_ip])
        try:
            wait_for(lambda: knows(dst, src), seconds)
        finally:
            for proc in (sender, sink):
                proc.terminate()
                proc.wait(timeout=10)

    before = net.lab.packets(gw.ns)
    assert net.ping(pc, laptop, count=20)
    relayed = net.lab.packets(gw.ns) - before
    assert relayed >= 40, f"before discovery their traffic should go through the gateway ({relayed} packets)"

    start = time.monotonic()
    while not (knows(laptop, pc) and knows(pc, laptop)) and time.monotonic() - start < 90:
        if not knows(laptop, pc):
            flow(pc, laptop, 12)
        if not knows(pc, laptop):
            flow(laptop, pc, 12)
    assert knows(laptop, pc), "my_laptop never learned my_pc's LAN address"
    assert knows(pc, laptop), "my_pc never learned my_laptop's LAN address"

    def direct() -> bool:
        before = net.lab.packets(gw.ns)
        ok = net.ping(pc, laptop, count=20)
        return ok and net.lab.packets(gw.ns) - before < 5

    assert wait_for(direct, 30, 0.1) is not None, "my_pc <-> my_laptop still goes through the gateway"
    FIGURES["gateway packets for 20 pings my_pc <-> my_laptop"] = f"{relayed} before LocalDiscovery, < 5 after"
    FIGURES["LocalDiscovery: both LAN addresses learned after"] = f"{time.monotonic() - start:.1f} s"


def test_a_new_node_joins_by_its_own_signed_push(net: IPv6Everywhere) -> None:
    """``join: open``: newbie adds its own host file, with its own owner line,
    in a commit signed by that same key; no admin is involved."""
    gw, pc, laptop = nodes(net, "gateway", "my_pc", "my_laptop")
    for node in (gw, pc, laptop):
        net.start_agent(node)
    assert wait_for(lambda: all(outcome(n) == "unchanged" for n in (gw, pc, laptop)), 30) is not None
    for node in (gw, pc, laptop):  # the admin's commit that set the owners, as every node applied it
        assert net.role(node, net.owned_sha) == "admin"
        for owned in ("my_pc", "my_laptop"):
            first = (node.tinc_dir / "hosts" / owned).read_text().splitlines()[0]
            assert first == net.owner_line(net.owner_key(owned)), (node.name, owned, first)
    hups_before = {n.name: n.log().count("Got HUP signal") for n in (gw, pc, laptop)}
    closed_before = closures(net)

    clone = net.clone("newbie")
    newbie = net.join_with_add_node("newbie", "198.51.100.3", net.inet, clone)
    assert newbie.subnet == f"{PREFIX}:1::/64"  # the lowest free /64 (0, 4 and 5 are taken)
    key = net.owner_key("newbie")
    for host in (clone / "hosts" / "newbie", newbie.tinc_dir / "hosts" / "newbie"):
        if not host.read_text().startswith("# syncd-owner:"):  # add-node may write it already
            host.write_text(net.owner_line(key) + "\n" + host.read_text())
    assert (clone / "hosts" / "newbie").read_bytes() == (newbie.tinc_dir / "hosts" / "newbie").read_bytes()
    # newbie's operator starts tincd once the gateway it connects to has its host file
    label = "tinc 1.0, newbie's self-signed join (syncd run, interval 1 s)"
    sha, out = join_measured(net, newbie, lambda: net.push("Add newbie", key=key, repo=clone), label)
    assert "3 added" in out and "= newbie (identical; adopted)" in out, out
    for node in (gw, pc, laptop):
        assert (node.tinc_dir / "hosts" / "newbie").exists()
        assert node.log().count("Got HUP signal") > hups_before[node.name], f"{node.name}'s tincd was not reloaded"
    assert wait_for(lambda: all(applied(n) == sha for n in (gw, pc, laptop, newbie)), 10) is not None
    for node in (gw, pc, laptop, newbie):
        assert net.role(node, sha) == "join:newbie", (node.name, net.log(node)[:2])
    assert net.reachable(newbie, laptop, 10) is not None
    closed = {n: c - closed_before[n] for n, c in closures(net).items() if n in closed_before}
    FIGURES["connections closed by the join"] = str(closed)
    for node in (gw, pc, laptop):
        new_lines = node.closed_connections()[closed_before[node.name] :]
        assert all("newbie" in line for line in new_lines), new_lines  # only the changed node's, if any
    assert closed == {"gateway": 0, "my_pc": 0, "my_laptop": 0}
    assert all(net.same_tincd().values())
    net.start_agent(newbie)
    assert wait_for(lambda: outcome(newbie) == "unchanged", 20) is not None


def test_an_owner_edits_its_own_host_file(net: IPv6Everywhere) -> None:
    everyone = nodes(net, "gateway", "my_pc", "my_laptop", "newbie")
    gw, pc, laptop, newbie = everyone
    hups_before = {n.name: n.log().count("Got HUP signal") for n in everyone}
    closed_before = closures(net)
    clone = net.clone("my_pc")
    host = clone / "hosts" / "my_pc"
    host.write_text(host.read_text() + f"Address = {pc.lan_ip}\n")
    sha = net.push("my_pc: its LAN address", key=net.owner_key("my_pc"), repo=clone)
    installed = wait_for_each([n.name for n in everyone], lambda n: has(net, n, "my_pc", f"Address = {pc.lan_ip}"), 20)
    assert None not in installed.values(), f"not installed everywhere: {installed}"
    FIGURES["push-to-installed, my_pc's owner-signed edit"] = per_node(installed)
    assert wait_for(lambda: all(applied(n) == sha for n in everyone), 10) is not None  # the audit trail is written
    for node in everyone:
        assert (node.tinc_dir / "hosts" / "my_pc").read_bytes() == host.read_bytes()
        assert net.role(node, sha) == "owner:my_pc", (node.name, net.log(node)[:2])
    reloaded = wait_for(lambda: all(n.log().count("Got HUP signal") > hups_before[n.name] for n in everyone), 10)
    assert reloaded is not None, "not every tincd was reloaded"
    # tincd 1.0 drops, on reload, the connections whose host file changed: my_pc's, and no other
    assert wait_for(lambda: net.ping(pc, laptop) and net.ping(pc, newbie) and net.ping(pc, gw), 30) is not None
    closed = {n: c - closed_before[n] for n, c in closures(net).items()}
    FIGURES["connections closed by my_pc's edit"] = str(closed)
    for line in gw.closed_connections()[closed_before["gateway"] :]:
        assert "my_pc" in line, f"the gateway closed another connection: {line}"
    assert closed["my_laptop"] == 0 and closed["newbie"] == 0, closed
    assert all(net.same_tincd().values())


def test_an_owner_cannot_touch_another_nodes_file(net: IPv6Everywhere) -> None:
    everyone = nodes(net, "gateway", "my_pc", "my_laptop", "newbie")
    gw, pc, laptop, newbie = everyone
    hups_before = {n.name: n.log().count("Got HUP signal") for n in everyone}
    before = {n.name: applied(n) for n in everyone}
    clone = net.clone("my_pc")
    good = git(clone, "rev-parse", "HEAD")
    assert set(before.values()) == {good}, before
    gateway_file = clone / "hosts" / "gateway"
    gateway_file.write_text(gateway_file.read_text().replace("Subnet = ::/0\n", ""))  # take the default route away
    since = time.time()
    net.push("my_pc edits the gateway", key=net.owner_key("my_pc"), repo=clone)
    refusals = wait_for(lambda: all(refused(n, "unauthorized", since) for n in everyone), 20)
    assert refusals is not None, {n.name: health(n) for n in everyone}
    for node in everyone:
        assert "hosts/gateway" in str(health(node).get("last_error")), health(node)
        assert (node.tinc_dir / "hosts" / "gateway").read_text().count("Subnet = ::/0") == 1
        assert applied(node) == good
        assert node.log().count("Got HUP signal") == hups_before[node.name], f"{node.name}'s tincd was reloaded"
    assert net.ping(pc, gw, count=3) and net.ping(newbie, laptop, count=3)
    assert all(net.same_tincd().values())
    # the admins drop my_pc's commit; every node is current again
    since = time.time()
    net.drop_to(good)
    assert wait_for(lambda: all(converged(n, since) for n in everyone), 20) is not None
    assert {n.name: applied(n) for n in everyone} == before


def test_a_strangers_commit_is_refused_everywhere(net: IPv6Everywhere) -> None:
    gw, pc, laptop, newbie = nodes(net, "gateway", "my_pc", "my_laptop", "newbie")
    net.refresh(net.repo)
    good = git(net.repo, "rev-parse", "HEAD")
    (net.repo / "hosts" / "evil").write_text(
        f"Subnet = {newbie.subnet}\n\n" + (newbie.tinc_dir / "hosts" / "newbie").read_text().split("\n\n", 1)[-1]
    )
    since = time.time()
    net.push("evil claims newbie's subnet", key=net.stranger)
    assert wait_for(lambda: all(refused(n, "signature", since) for n in (gw, pc, laptop, newbie)), 20) is not None
    for node in (gw, pc, laptop, newbie):
        assert not (node.tinc_dir / "hosts" / "evil").exists()
    assert net.ping(pc, newbie, count=3)
    assert all(net.same_tincd().values())
    # the admin throws the stranger's commit away
    since = time.time()
    net.drop_to(good)
    assert wait_for(lambda: all(converged(n, since) for n in (gw, pc, laptop, newbie)), 20) is not None


def test_the_admins_rotate_themselves_in_the_repository(net: IPv6Everywhere) -> None:
    """Every node's local allowed_signers names admin1 only; the repository's
    own file takes over: admin2 is added, then admin2 removes admin1."""
    everyone = nodes(net, "gateway", "my_pc", "my_laptop", "newbie")
    admin1, admin2 = net.admin, net.admin2
    assert admin1 is not None
    net.refresh(net.repo)
    allowed_signers(net.repo / "allowed_signers", (admin1, 'namespaces="git"'), (admin2, 'namespaces="git"'))
    added = net.push("admin2 joins the admins")
    assert wait_for(lambda: all(applied(n) == added for n in everyone), 20) is not None
    allowed_signers(net.repo / "allowed_signers", (admin2, 'namespaces="git"'))
    rotated = net.push("admin1 leaves the admins", key=admin2)
    installed = wait_for_each([n.name for n in everyone], lambda n: applied(net.nodes[n]) == rotated, 20)
    assert None not in installed.values(), f"admin2's commit not applied everywhere: {installed}"
    FIGURES["push-to-applied, admin2's first commit (rotation)"] = per_node(installed)
    for node in everyone:
        entries = {e["commit"]: e for e in net.log(node)}
        assert entries[added]["role"] == "admin" and entries[added]["signer"] == admin1.principal
        assert entries[rotated]["role"] == "admin" and entries[rotated]["signer"] == admin2.principal
    net.admin = admin2
    # admin1, rotated out, signs a change anyway
    gateway_file = net.repo / "hosts" / "gateway"
    gateway_file.write_text(gateway_file.read_text() + "# admin1 was here\n")
    since = time.time()
    net.push("admin1 after leaving", key=admin1)
    assert wait_for(lambda: all(refused(n, "signature", since) for n in everyone), 20) is not None
    for node in everyone:
        assert "admin1 was here" not in (node.tinc_dir / "hosts" / "gateway").read_text()
        assert applied(node) == rotated
    since = time.time()
    net.drop_to(rotated)
    assert wait_for(lambda: all(converged(n, since) for n in everyone), 20) is not None
    assert all(net.same_tincd().values())


def test_a_signed_removal_cuts_the_node_off(net: IPv6Everywhere) -> None:
    gw, pc, laptop, newbie = nodes(net, "gateway", "my_pc", "my_laptop", "newbie")
    stop_cleanly(net, newbie)  # its own host file is about to go
    closed_before = closures(net)
    (net.repo / "hosts" / "newbie").unlink()
    removed = net.push("Remove newbie")  # signed by admin2 since the rotation
    assert wait_for(lambda: not any((n.tinc_dir / "hosts" / "newbie").exists() for n in (gw, pc, laptop)), 20)
    assert wait_for(lambda: all(applied(n) == removed for n in (gw, pc, laptop)), 10) is not None
    for node in (gw, pc, laptop):
        entry = next(e for e in net.log(node) if e["commit"] == removed)
        assert (entry["role"], entry["signer"], entry["files"]) == ("admin", "admin2@example.org", ["hosts/newbie"])
    assert wait_for(lambda: not net.ping(pc, newbie, timeout=1), 30) is not None, "newbie is still reachable"
    assert wait_for(lambda: not net.ping(laptop, newbie, timeout=1), 10) is not None
    closed = {n: c - closed_before[n] for n, c in closures(net).items()}
    FIGURES["connections closed by the removal"] = str(closed)
    assert closed["gateway"] >= 1  # the gateway dropped newbie: its host file is gone
    for line in gw.closed_connections()[closed_before["gateway"] :]:
        assert "newbie" in line, f"the gateway closed another connection: {line}"
    for node in (pc, laptop):  # the others never had a connection with newbie
        assert all("newbie" in line for line in node.closed_connections()[closed_before[node.name] :])
    assert net.ping(pc, laptop) and net.ping(pc, gw)
    assert {k: v for k, v in net.same_tincd().items() if k != "newbie"} == {
        "gateway": True,
        "my_pc": True,
        "my_laptop": True,
    }


def test_agents_stop_cleanly(net: IPv6Everywhere) -> None:
    for node in nodes(net, "gateway", "my_pc", "my_laptop"):
        stop_cleanly(net, node)
