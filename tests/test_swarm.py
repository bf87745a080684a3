"""Fifty real agents on loopback addresses, `interval: 300`: one push, its
server's post-receive hook tells one agent, and the agents tell each other
(the same measure is benchmarks/fleet.py's push row)."""

from __future__ import annotations

from pathlib import Path

from tests.figures import record
from tests.swarm import push_and_measure, swarm

AGENTS = 50


def test_one_push_reaches_fifty_agents_in_seconds_with_few_messages_each(tmp_path: Path) -> None:
    with swarm(tmp_path, AGENTS) as sw:
        times, sent = push_and_measure(sw, told=7)
        assert all(p.poll() is None for p in sw.agents.values())
    slowest = max(times.values(), default=float("inf"))
    record(
        f"{AGENTS} agents on loopback, interval 300, one told by the hook: push to applied",
        f"all {len(times)} in {slowest:.2f} s (median {sorted(times.values())[len(times) // 2]:.2f} s); "
        f"notifications sent: {sum(sent.values())} in all, at most {max(sent.values())} per agent",
    )
    assert len(times) == AGENTS, f"not applied: {sorted(set(range(AGENTS)) - set(times))}"
    assert slowest <= 3.0, sorted(times.items(), key=lambda item: item[1])
    assert max(sent.values()) <= 5, sent
    assert sum(sent.values()) >= AGENTS - 1  # everyone was told by someone
