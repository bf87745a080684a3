"""What the end-to-end tests read off a node: its files, its state and
health, its agent's log; and how they report figures."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import tinc11
from tests.conftest import lacking
from tests.e2e.lab import run, wait_for, wait_for_each
from tests.e2e.network import ONE_ZERO, Flavour, IPv6Everywhere, Node
from tests.figures import FIGURES
from tests.servers import require

MEMBERS = ("gateway", "my_pc", "my_laptop")


@contextlib.contextmanager
def network(
    workdir: Path,
    flavour: Flavour = ONE_ZERO,
    sbin11: Path | None = None,
    *,
    agents: bool = False,
    interval: int = 1,
) -> Iterator[IPv6Everywhere]:
    """The network built and every node's first sync done (before tincd
    runs: there is nothing to reload yet); with ``agents``, every node's
    `syncd run` started next, so that they see all that tincd does; then
    every tincd.  Torn down afterwards, leaving no namespace behind.  Needs
    root, ``ip``, ``nft``, ``tincd``, ``ping`` and ``git``; ``.ci/run``
    installs them and makes a skip a failure."""
    if os.geteuid() != 0:
        lacking("the end-to-end tests need root (network namespaces)")
    for program in ("ip", "nft", "tincd", "ping", "git"):
        require(program)
    net = IPv6Everywhere(workdir, flavour, sbin11, interval)
    try:
        net.build()
        for node in net.nodes.values():
            out = net.sync(node)
            assert "first sync" in out, out
        if agents:
            for node in net.nodes.values():
                net.start_agent(node)
            everyone = list(net.nodes.values())
            assert wait_for(lambda: all(outcome(n) == "unchanged" for n in everyone), 30) is not None
        for node in net.nodes.values():
            net.start_tincd(node)
        yield net
    finally:
        prefix = net.lab.prefix
        net.close()
        left = run(["ip", "netns", "list"]).stdout.decode()
        assert prefix not in left, f"namespaces left behind: {left}"


def tinc11_network(factory: pytest.TempPathFactory, flavour: Flavour) -> Iterator[IPv6Everywhere]:
    """A module's network with nodes on tinc 1.1 (the build of
    tests/tinc11.py), its agents running before any tincd starts."""
    with network(factory.mktemp("e2e-tinc11"), flavour, tinc11.sbin(), agents=True) as built:
        yield built


def events(node: Node) -> list[dict[str, object]]:
    """The node's agent's log events, oldest first."""
    path = node.root / "agent.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line[3:]) for line in lines if line.startswith("<")]


def nodes(net: IPv6Everywhere, *names: str) -> list[Node]:
    return [net.nodes[n] for n in names]


def closures(net: IPv6Everywhere) -> dict[str, int]:
    return {name: len(node.closed_connections()) for name, node in net.nodes.items() if node.tincd is not None}


def stop_cleanly(net: IPv6Everywhere, node: Node) -> None:
    assert node.agent is not None and node.agent.poll() is None, f"{node.name}'s agent died"
    net.stop_agent(node)
    names = [event["event"] for event in events(node)]
    assert names[0] == "run.started" and names[-1] == "run.stopped", names


def has(net: IPv6Everywhere, name: str, host: str, text: str = "") -> bool:
    """``name`` has hosts/``host`` installed (containing ``text``)."""
    try:
        return text in (net.nodes[name].tinc_dir / "hosts" / host).read_text()
    except OSError:
        return False


def per_node(times: dict[str, float | None]) -> str:
    return ", ".join(f"{name} {t:.2f} s" for name, t in times.items() if t is not None)


def applied(node: Node) -> object:
    try:
        return json.loads((node.root / "state" / "state.json").read_text()).get("last_applied")
    except (OSError, ValueError):
        return None


def refused(node: Node, reason: str, since: float) -> bool:
    """The node's latest pass, after ``since`` (wall clock), refused for ``reason``."""
    seen = health(node)
    at = seen.get("last_error_at")
    return seen.get("last_outcome") == reason and isinstance(at, float) and at >= since


def converged(node: Node, since: float) -> bool:
    """A pass after ``since`` (wall clock) found the node current."""
    seen = health(node)
    at = seen.get("last_pass_at")
    return seen.get("last_outcome") == "unchanged" and isinstance(at, float) and at >= since


def health(node: Node) -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads((node.root / "state" / "health.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


def outcome(node: Node) -> object:
    return health(node).get("last_outcome")


def join_measured(net: IPv6Everywhere, newbie: Node, push: Callable[[], str], label: str) -> tuple[str, str]:
    """A newcomer joins: ``push()`` pushes its host file (and returns the
    commit); the members' agents install it; its operator then runs `syncd
    sync` on it and starts its tincd.  Records push-to-installed and
    push-to-reachable (the member pings the newcomer over the VPN) per
    member under ``label``; returns the commit and the newcomer's sync output."""
    pushed = time.monotonic()
    sha = push()
    installed = wait_for_each(MEMBERS, lambda n: has(net, n, newbie.name), 20)
    assert None not in installed.values(), f"not installed everywhere: {installed}"
    out = net.sync(newbie)  # the newcomer fetches everyone else's host file, and keeps its own
    net.start_tincd(newbie)
    reached = net.reached_since(pushed, newbie, MEMBERS, 45)
    assert None not in reached.values(), f"{newbie.name} not reachable from every member: {reached}"
    FIGURES[f"{label}: push-to-installed per node"] = per_node(installed)
    FIGURES[f"{label}: push-to-reachable per node"] = per_node(reached)
    return sha, out
