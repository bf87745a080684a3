"""The order in which a pass tries the tips its URLs offer
(``sync.mirrors``), on a commit graph in memory: newest first, the tie
rule, what a refusal leaves to the next tip, and what the last pass
settled is not checked again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from syncd.errors import FetchError, Reason, RefusedError
from syncd.rules.plan import Plan
from syncd.signing.commits import CommitInfo
from syncd.sync.mirrors import Offered, apply_newest, candidates, first_parent_depth
from syncd.sync.ports import SyncResult, UrlState


@dataclass
class Graph:
    """Commits by name; ``is_ancestor`` counts its calls (each is a walk)."""

    commits: dict[str, CommitInfo] = field(default_factory=dict)
    walks: int = 0

    def add(self, sha: str, *parents: str, time: int | None = None) -> str:
        when = time if time is not None else 1_000 + len(self.commits)
        self.commits[sha] = CommitInfo(sha, sha.encode(), b"sig", when, parents, sha)
        return sha

    def commit(self, sha: str) -> CommitInfo:
        return self.commits[sha]

    def has(self, sha: str) -> bool:
        return sha in self.commits

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        self.walks += 1
        pending, seen = [descendant], set()
        while pending:
            sha = pending.pop()
            if sha == ancestor:
                return True
            if sha not in seen:
                seen.add(sha)
                pending.extend(self.commits[sha].parents)
        return False


@pytest.fixture
def graph() -> Graph:
    """root - a - b (applied) - c - d;  b - x (a fork after b);  a - y (before b)."""
    g = Graph()
    g.add("root")
    g.add("a", "root")
    g.add("b", "a")
    g.add("c", "b")
    g.add("d", "c")
    g.add("x", "b")
    g.add("y", "a")
    return g


def order(graph: Graph, last: str | None, *tips: str) -> list[str]:
    return [tip for tip, _ in candidates(graph, last, [(f"u{i}", t) for i, t in enumerate(tips)])]


def test_newest_first_then_forks_then_the_applied_commit(graph: Graph) -> None:
    assert order(graph, "b", "b", "c", "d") == ["d", "c", "b"]
    assert order(graph, "b", "y", "b", "d") == ["d", "y", "b"]
    assert order(graph, "b", "a", "b") == ["b"]  # behind: never tried while anything else is offered
    assert order(graph, "b", "a", "root") == ["a", "root"]  # only behind: tried, to be refused by name
    assert order(graph, None, "c", "d") == ["d", "c"]  # a first sync


def test_two_lines_neither_containing_the_other(graph: Graph) -> None:
    assert first_parent_depth(graph, "d", "b") == 2 and first_parent_depth(graph, "x", "b") == 1
    assert order(graph, "b", "x", "d") == ["d", "x"]  # the longer first-parent history
    graph.add("z", "b", time=5_000)
    assert order(graph, "b", "x", "z") == ["z", "x"] == order(graph, "b", "z", "x")  # then the later date
    graph.add("w", "b", time=5_000)
    assert order(graph, "b", "z", "w") == ["w", "z"] == order(graph, "b", "w", "z")  # then the lower id


def result(tip: str, url: str) -> SyncResult:
    return SyncResult("applied", tip, "admin", url, Plan())


def test_a_refused_tip_costs_nothing_but_its_check(graph: Graph) -> None:
    tried: list[str] = []

    def run(tip: str, url: str) -> SyncResult:
        tried.append(tip)
        if tip == "d":
            raise RefusedError(f"commit {tip}: unauthorized", reason=Reason.UNAUTHORIZED)
        return result(tip, url)

    offers: list[Offered] = [("u0", "d", None), ("u1", "c", None), ("u2", None, FetchError("u2: no answer"))]
    recorded: list[tuple[UrlState, ...]] = []
    done = apply_newest(graph, lambda: "b", offers, run, recorded.append)
    assert tried == ["d", "c"] and done.commit == "c"
    states = {s.url: (s.state, s.reason) for s in done.urls}
    assert states == {"u0": ("ahead", "unauthorized"), "u1": ("current", None), "u2": ("failing", "fetch-failed")}
    assert recorded == [done.urls]
    assert any("u0 offers d (ahead), refused" in w for w in done.warnings)


def test_every_tip_refused_raises_the_newest_ones_refusal_naming_its_url(graph: Graph) -> None:
    def run(tip: str, url: str) -> SyncResult:
        raise RefusedError(f"commit {tip}: no", reason=Reason.SIGNATURE)

    recorded: list[tuple[UrlState, ...]] = []
    offers: list[Offered] = [("u0", "c", None), ("u1", "d", None)]
    with pytest.raises(RefusedError, match=r"commit d: no \(offered by u1\)"):
        apply_newest(graph, lambda: "b", offers, run, recorded.append)
    assert [(s.state, s.against) for s in recorded[0]] == [("ahead", "b"), ("ahead", "b")]


def test_what_the_last_pass_settled_is_not_checked_again(graph: Graph) -> None:
    tried: list[str] = []

    def run(tip: str, url: str) -> SyncResult:
        tried.append(tip)
        if tip != "b":
            raise RefusedError(f"commit {tip}: non-fast-forward", reason=Reason.NON_FAST_FORWARD)
        return SyncResult("unchanged", tip, "admin", url, Plan())

    offers: list[Offered] = [("u0", "y", None), ("u1", "a", None), ("u2", "b", None)]
    first = apply_newest(graph, lambda: "b", offers, run, lambda _: None)
    assert tried == ["y", "b"]
    assert [s.state for s in first.urls] == ["forked", "behind", "current"]
    tried.clear()
    graph.walks = 0
    again = apply_newest(graph, lambda: "b", offers, run, lambda _: None, lambda: first.urls)
    assert tried == ["b"] and graph.walks == 0
    assert again.urls == first.urls
    # against another applied commit, nothing is taken as settled
    moved: Sequence[UrlState] = [UrlState(s.url, s.tip, s.state, s.detail, s.reason, "a") for s in first.urls]
    tried.clear()
    apply_newest(graph, lambda: "b", offers, run, lambda _: None, lambda: moved)
    assert tried == ["y", "b"]


def test_one_tip_from_every_url_reads_nothing_more(graph: Graph) -> None:
    def applied() -> str:
        raise AssertionError("the state was read")

    def previous() -> Sequence[UrlState]:
        raise AssertionError("the health was read")

    offers: list[Offered] = [("u0", "b", None), ("u1", "b", None)]
    done = apply_newest(graph, applied, offers, lambda t, u: result(t, u), lambda _: None, previous)
    assert graph.walks == 0 and [s.state for s in done.urls] == ["current", "current"]
