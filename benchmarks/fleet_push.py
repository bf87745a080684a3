"""benchmarks/fleet.py's push row: --push-agents real `syncd run` agents
(interval 300) on loopback addresses (127.0.0.0/8), one `git daemon`; one
signed push whose post-receive hook (`syncd notify`) tells one agent; the
agents tell each other.  Measured: push → applied on every agent (from each
agent's state), and the notifications each agent sent (from its log).
Goals: every agent within 3 s, at most 5 notifications per agent.  The
swarm is tests/swarm.py's, so this needs the test dependencies."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.swarm import push_and_measure, swarm  # the checkout's root, just added

GOAL_SECONDS = 3.0
GOAL_MESSAGES = 5


def push_row(agents: int, tmp: Path) -> tuple[list[str], list[str]]:
    """The table (a header and one row) and the goals missed."""
    with swarm(tmp / "push", agents) as sw:
        times, sent = push_and_measure(sw, told=0)
    ordered = sorted(times.values())
    slowest = ordered[-1] if len(ordered) == agents else float("inf")
    lines = [
        "| push → every agent | agents | applied: median | applied: slowest | notifications | per agent, at most |",
        "|---|---:|---:|---:|---:|---:|",
        f"| `syncd notify` from the post-receive hook to one agent, interval 300 | {agents} | "
        f"{ordered[len(ordered) // 2]:.2f} s | {slowest:.2f} s | {sum(sent.values())} | {max(sent.values())} |",
    ]
    problems = []
    if slowest > GOAL_SECONDS:
        within = sum(1 for t in ordered if t <= GOAL_SECONDS)
        problems.append(f"push: {within} of {agents} agents applied the push within {GOAL_SECONDS:g} s")
    if max(sent.values()) > GOAL_MESSAGES:
        problems.append(f"push: an agent sent {max(sent.values())} notifications, more than {GOAL_MESSAGES}")
    return lines, problems
