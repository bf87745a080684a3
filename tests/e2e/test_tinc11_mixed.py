"""tinc 1.1 beside tinc 1.0, for real: the "IPv6 everywhere" network with the
gateway and my_pc on tinc 1.1 (RSA and Ed25519 keys, reloaded with `tinc
reload`) and my_laptop on Debian's tincd 1.0, under a `tinc: "1.1"` policy
with `legacy_rsa`.

The gateway's Ed25519 key is not in the repository yet (its upgrade was not
pushed): my_pc's tincd learns it when it connects to the gateway and appends
it to its hosts/gateway.  syncd keeps that file, says which line to add, and
does not reload, for a minute of `syncd run`; once the repository carries
the key, every node converges with one reload (docs/host-files.md, "What
tincd writes").  The tests run in order on one network.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from syncd.node.privkeys import private_key_publics
from syncd.tinc.keys import tinc_b64encode
from syncd.tinc.learnedkey import block
from tests import tinc11
from tests.e2e.checks import (
    MEMBERS,
    applied,
    events,
    join_measured,
    nodes,
    outcome,
    per_node,
    stop_cleanly,
    tinc11_network,
)
from tests.e2e.lab import wait_for, wait_for_each
from tests.e2e.network import Flavour, IPv6Everywhere, Node
from tests.figures import FIGURES

pytestmark = pytest.mark.e2e

# tinc 1.1 learns a key only on a connection it makes itself (it sends ID with
# protocol minor 1 and gets the key in the peer's ACK, upgrade_h() in tinc's
# src/protocol_auth.c): my_pc, behind its NAT, connects to the gateway
LEARNER, LAGGING = "my_pc", "gateway"
MIXED = Flavour(policy_tinc="1.1", tinc11=frozenset({"gateway", "my_pc", "newbie"}), lagging=frozenset({LAGGING}))
WINDOW = 60.0  # seconds of `syncd run` watched after tincd appended the key


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IPv6Everywhere]:
    yield from tinc11_network(tmp_path_factory, MIXED)


def ed25519_key(node: Node) -> str:
    """The node's own Ed25519 public key, from its private key, in tinc's base64."""
    key = next(k for _, k in private_key_publics(node.tinc_dir) if k.algorithm == "ed25519")
    return tinc_b64encode(key.identity)


def reloads(node: Node) -> dict[str, int]:
    """How often node's tincd was reloaded: as syncd counts it, as its agent
    logged it, and as tincd logged it."""
    state = json.loads((node.root / "state" / "state.json").read_text())
    logged = sum(1 for e in events(node) if e["event"] == "reload.done")
    return {"syncd": state["reloads"], "agent": logged, "tincd": tinc11.reloads(node.log())}


def status(net: IPv6Everywhere, node: Node) -> dict[str, object]:
    result = net.syncd(node, "status", "--format", "json")
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_tinc_1_0_and_1_1_reach_each_other(net: IPv6Everywhere) -> None:
    gw, pc, laptop = nodes(net, *MEMBERS)
    assert (gw.version, pc.version, laptop.version) == ("1.1", "1.1", "1.0")
    for src in (gw, pc, laptop):
        for dst in (gw, pc, laptop):
            if src is not dst:
                assert net.reachable(src, dst, 45) is not None, f"{src.name} cannot reach {dst.name}"
    assert "Ed25519PublicKey" not in (net.repo / "hosts" / LAGGING).read_text()
    assert all(net.same_tincd().values())


def test_the_key_tincd_learned_is_kept_without_a_reload_storm(net: IPv6Everywhere) -> None:
    learner, lagging = net.nodes[LEARNER], net.nodes[LAGGING]
    key = ed25519_key(lagging)
    learned = learner.tinc_dir / "hosts" / LAGGING
    repo = (net.repo / "hosts" / LAGGING).read_bytes()
    assert wait_for(lambda: learned.read_bytes() != repo, 30) is not None, f"{LEARNER}'s tincd appended nothing"
    appended_at = time.monotonic()
    appended = learned.read_bytes()
    assert appended.startswith(repo + block(key)), appended[len(repo) :]  # tinc's own block, the gateway's own key
    assert f"Got Ed25519 public key from {LAGGING}" in learner.log()
    inode = learned.stat().st_ino
    before = reloads(learner)
    line = f"Ed25519PublicKey = {key}"
    reported = wait_for(lambda: any(e.get("line") == line for e in events(learner)), 10)
    assert reported is not None, events(learner)[-5:]
    report = status(net, learner)
    assert (report["drift"], report["learned_keys"], report["healthy"]) == ([], {LAGGING: line}, True), report
    assert 'syncd_learned_keys{net="inet6"} 1' in (learner.root / "metrics.prom").read_text()

    time.sleep(max(0.0, WINDOW - (time.monotonic() - appended_at)))  # the agents keep running meanwhile
    after = reloads(learner)
    watched = time.monotonic() - appended_at
    added = {how: after[how] - before[how] for how in after}
    learned_events = [e for e in events(learner) if e["event"] == "tinc.key_learned"]
    repaired = [e for e in events(learner) if e["event"] == "drift.repaired"]
    FIGURES[f"tinc 1.1 learned-key append: reloads of {LEARNER}'s tincd"] = (
        f"{added['tincd']} in {watched:.0f} s of syncd run after it appended the {LAGGING}'s key "
        f"({(len(learned.read_bytes()) - len(repo)) // len(block(key))} block(s) appended, "
        f"{len(learned_events)} tinc.key_learned event(s), {len(repaired)} drift repair(s))"
    )
    assert max(added.values()) <= 1, added
    assert not repaired, repaired
    assert [e["node"] for e in learned_events] == [LAGGING]
    assert learned.stat().st_ino == inode, f"hosts/{LAGGING} was rewritten"
    assert learned.read_bytes().startswith(appended)
    for node in nodes(net, *MEMBERS):  # nothing else was appended anywhere: every other file names its keys
        for host in (node.tinc_dir / "hosts").iterdir():
            if (node.name, host.name) != (LEARNER, LAGGING):
                assert b"automatically added by tinc" not in host.read_bytes(), (node.name, host.name)
    gw, pc, laptop = nodes(net, *MEMBERS)
    assert net.ping(pc, gw) and net.ping(gw, pc) and net.ping(laptop, gw)  # the upgraded connection carries traffic
    assert all(net.same_tincd().values())


def test_once_the_repository_carries_the_key_every_node_converges_with_one_reload(net: IPv6Everywhere) -> None:
    gw, pc, laptop = nodes(net, *MEMBERS)
    report = status(net, net.nodes[LEARNER])
    learned = report["learned_keys"]
    assert isinstance(learned, dict)
    line = learned[LAGGING]  # the line status says to add, as an admin would copy it
    before = {n.name: reloads(n) for n in (gw, pc, laptop)}
    net.refresh(net.repo)
    host = net.repo / "hosts" / LAGGING
    host.write_text(host.read_text() + f"{line}\n")
    pushed = time.monotonic()
    sha = net.push(f"{LAGGING}'s Ed25519 key, as {LEARNER}'s tincd learned it")
    wanted = host.read_bytes()
    installed = wait_for_each(MEMBERS, lambda n: _bytes(net.nodes[n], LAGGING) == wanted, 20)
    assert None not in installed.values(), installed
    FIGURES[f"tinc 1.1 mixed: push-to-installed per node, the {LAGGING}'s Ed25519 key"] = per_node(installed)
    assert wait_for(lambda: all(applied(n) == sha for n in (gw, pc, laptop)), 10) is not None
    time.sleep(5)  # long enough for a storm to show
    for node in (gw, pc, laptop):
        assert (node.tinc_dir / "hosts" / LAGGING).read_bytes() == wanted, node.name
        added = {how: count - before[node.name][how] for how, count in reloads(node).items()}
        assert added["syncd"] == 1 and added["agent"] == 1 and added["tincd"] <= 1, (node.name, added)
    report = status(net, net.nodes[LEARNER])
    assert (report["drift"], report["learned_keys"]) == ([], {}), report
    assert 'syncd_learned_keys{net="inet6"} 0' in (net.nodes[LEARNER].root / "metrics.prom").read_text()
    assert wait_for(lambda: net.ping(pc, gw) and net.ping(laptop, gw) and net.ping(pc, laptop), 30) is not None
    FIGURES["tinc 1.1 mixed: push-to-reachable after the key's push, all pairs"] = f"{time.monotonic() - pushed:.2f} s"


def test_a_tinc_1_1_newcomer_joins(net: IPv6Everywhere) -> None:
    """newbie (tinc 1.1, RSA and Ed25519 keys from `syncd add-node`) joins by
    its own signed push; my_laptop on tinc 1.0 reaches it too."""
    clone = net.clone("newbie")
    newbie = net.join_with_add_node("newbie", "198.51.100.3", net.inet, clone)
    assert newbie.version == "1.1"
    key = net.owner_key("newbie")
    for host in (clone / "hosts" / "newbie", newbie.tinc_dir / "hosts" / "newbie"):
        if not host.read_text().startswith("# syncd-owner:"):
            host.write_text(net.owner_line(key) + "\n" + host.read_text())
    text = (clone / "hosts" / "newbie").read_text()
    assert "Ed25519PublicKey = " in text and "-----BEGIN RSA PUBLIC KEY-----" in text
    label = "tinc 1.1 mixed (gateway, my_pc, newbie 1.1; my_laptop 1.0), newbie's join"
    join_measured(net, newbie, lambda: net.push("Add newbie", key=key, repo=clone), label)
    gw = net.nodes["gateway"]
    assert wait_for(lambda: any(e.get("method") == "tinc" for e in events(gw)), 10) is not None
    assert "Got 'reload' command" in gw.log()
    net.start_agent(newbie)
    assert wait_for(lambda: outcome(newbie) == "unchanged", 20) is not None


def test_agents_stop_cleanly(net: IPv6Everywhere) -> None:
    for node in nodes(net, *MEMBERS, "newbie"):
        stop_cleanly(net, node)


def _bytes(node: Node, host: str) -> bytes | None:
    try:
        return (node.tinc_dir / "hosts" / host).read_bytes()
    except OSError:
        return None
