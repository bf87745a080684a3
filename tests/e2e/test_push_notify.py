"""Push → every node in seconds at `interval: 300`: the "IPv6 everywhere"
network for real (tincd 1.0 in namespaces, git daemon on the gateway), its
agents polling only every five minutes.  The bare repository's post-receive
hook runs `syncd notify`, in the gateway's namespace: first it tells every
node's agent (the gateway's installed host files name them), then only
my_laptop's, and the others learn of the push from the agents, over the
VPN.  Each time a newcomer joins; every member must have applied its
commit within 3 s of the push, and ping it within 5 s."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.checks import MEMBERS, applied, events, network, nodes, per_node, stop_cleanly
from tests.e2e.lab import wait_for, wait_for_each
from tests.e2e.network import IPv6Everywhere, Node
from tests.figures import FIGURES

pytestmark = pytest.mark.e2e

APPLIED_WITHIN = 3.0
REACHED_WITHIN = 5.0


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IPv6Everywhere]:
    with network(tmp_path_factory.mktemp("e2e-notify"), agents=True, interval=300) as built:
        yield built


def post_receive(net: IPv6Everywhere, *args: str) -> None:
    """The served repository's hook: `syncd notify ARGS --post-receive` in the gateway's namespace."""
    gateway = net.nodes["gateway"]
    root = Path(__file__).resolve().parents[2]
    hook = net.served / "hooks" / "post-receive"
    argv = " ".join(["ip", "netns", "exec", gateway.ns, sys.executable, "-m", "syncd", "notify", *args])
    hook.write_text(f"#!/bin/sh\nexport PYTHONPATH={root}\nexec {argv} --post-receive\n")
    hook.chmod(0o755)


def join_notified(net: IPv6Everywhere, name: str, ip: str, label: str) -> tuple[str, Node]:
    """``name`` joins with add-node and pushes its host file; measures
    push → applied (the agents' state) and push → reachable per member."""
    clone = net.clone(name)
    newbie = net.join_with_add_node(name, ip, net.inet, clone)
    key = net.owner_key(name)
    for host in (clone / "hosts" / name, newbie.tinc_dir / "hosts" / name):
        host.write_text(net.owner_line(key) + "\n" + host.read_text())
    pushed = time.monotonic()
    sha = net.push(f"Add {name}", key=key, repo=clone)  # the hook runs before the push returns
    offset = time.monotonic() - pushed
    waited = wait_for_each(MEMBERS, lambda n: applied(net.nodes[n]) == sha, 30)
    done = {n: None if t is None else offset + t for n, t in waited.items()}
    net.sync(newbie)  # its operator: the first sync, then tincd
    net.start_tincd(newbie)
    reached = net.reached_since(pushed, newbie, MEMBERS, 45)
    FIGURES[f"{label}: push-to-applied per node"] = per_node(done)
    FIGURES[f"{label}: push-to-reachable per node"] = per_node(reached)
    assert None not in done.values() and max(t for t in done.values() if t) <= APPLIED_WITHIN, done
    assert None not in reached.values() and max(t for t in reached.values() if t) <= REACHED_WITHIN, reached
    return sha, newbie


def applied_by(node: Node, sha: str) -> dict[str, object]:
    """The node's agent's sync.applied event for ``sha`` (logged just after the state is saved)."""

    def found() -> list[dict[str, object]]:
        return [e for e in events(node) if e["event"] == "sync.applied" and e["commit"] == sha]

    wait_for(lambda: bool(found()), 10)
    assert len(found()) == 1, (node.name, found())
    return found()[0]


def test_the_server_hook_tells_every_agent(net: IPv6Everywhere) -> None:
    gateway = net.nodes["gateway"]
    post_receive(net, "-c", str(gateway.config))
    label = "interval 300, the server's hook tells every agent, newbie joins"
    sha, _ = join_notified(net, "newbie", "198.51.100.3", label)
    for node in nodes(net, *MEMBERS):
        event = applied_by(node, sha)
        assert event["trigger"] == "notify", event  # not a poll: the interval is 300 s
        assert any(e["event"] == "notify.heard" and e["by"] == "hook" for e in events(node)), node.name


def test_one_agent_told_brings_the_others_along(net: IPv6Everywhere) -> None:
    laptop = net.nodes["my_laptop"]
    post_receive(net, "--net", "inet6", "--to", f"[{laptop.vpn_ip}]")
    label = "interval 300, the server's hook tells my_laptop only, newbie2 joins"
    sha, _ = join_notified(net, "newbie2", "198.51.100.4", label)
    assert applied_by(laptop, sha)["by"] == "hook"
    for node in nodes(net, "gateway", "my_pc"):
        event = applied_by(node, sha)
        assert event["trigger"] == "notify" and event["by"] in MEMBERS, event  # told by an agent
    sent = [e for e in events(laptop) if e["event"] == "notify.sent" and e["commit"] == sha]
    assert sent and all(int(str(e["sent"])) <= 5 for e in sent), sent


def test_agents_stop_cleanly(net: IPv6Everywhere) -> None:
    for node in nodes(net, *MEMBERS):
        stop_cleanly(net, node)
