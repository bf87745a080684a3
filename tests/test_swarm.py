"""Fifty real agents on loopback addresses, `interval: 300`: one push, its
server's post-receive hook tells one agent, and the agents tell each other.
The speed goal (every agent within 3 s) is benchmarks/fleet.py's push row,
which takes the same measure; here: every agent applies the push from a
notification (a poll would come minutes later), and none sends more than 5."""

from __future__ import annotations

from pathlib import Path

from tests.figures import record
from tests.swarm import push_and_measure, swarm

AGENTS = 50
NOT_A_POLL = 30.0  # seconds: a tenth of the interval


def test_one_push_reaches_fifty_agents_from_one_notification(tmp_path: Path) -> None:
    with swarm(tmp_path, AGENTS) as sw:
        times, sent = push_and_measure(sw, told=7, timeout=NOT_A_POLL)
        assert all(p.poll() is None for p in sw.agents.values())
        triggers = {
            i: [(e["trigger"], e.get("by")) for e in sw.events(i) if e["event"] == "sync.applied"] for i in sw.agents
        }
    slowest = max(times.values(), default=float("inf"))
    record(
        f"{AGENTS} agents on loopback, interval 300, one told by the hook: push to applied",
        f"all {len(times)} in {slowest:.2f} s (median {sorted(times.values())[len(times) // 2]:.2f} s); "
        f"notifications sent: {sum(sent.values())} in all, at most {max(sent.values())} per agent",
    )
    assert len(times) == AGENTS, f"not applied within {NOT_A_POLL:g} s: {sorted(set(range(AGENTS)) - set(times))}"
    assert triggers[7] == [("notify", "hook")], triggers[7]
    others = {i: t for i, t in triggers.items() if i != 7}
    assert all(t == [("notify", t[0][1])] and str(t[0][1]).startswith("node") for t in others.values()), others
    assert max(sent.values()) <= 5, sent
    assert sum(sent.values()) >= AGENTS - 1  # everyone was told by someone
