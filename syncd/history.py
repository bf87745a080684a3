"""What the new commits must pass before their tree is read: the rollback
guard (the tip descends from the last applied commit, matched by signed
content), the clock guard (no backdated commit on the first-parent chain)
and the signature policy (every new commit signed, with ``trust.verify:
all``).  Pure: it reads commits through the pipeline's ``Repository``."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING

from syncd.commits import CommitInfo
from syncd.errors import RefusedError

if TYPE_CHECKING:
    from syncd.pipeline import Ports, Repository, Rules, Signed
    from syncd.state import State


def verify_history(
    ports: Ports, rules: Rules, state: State, tip: CommitInfo, allow_rewind: bool
) -> list[tuple[CommitInfo, Signed | None]]:
    """The rollback guard, the clock guard and the authority of every new
    commit (``trust.Authority``): the commits after the last applied one,
    newest first, each with who signed it and in which role (None when
    ``trust.verify: tip`` left it unchecked).  Raises ``RefusedError``
    naming the offending commit."""
    repo, last, authority = ports.repo, state.last_applied, ports.authority
    if tip.sha == last:
        return []
    if last is None and not rules.verify_all:
        return [(tip, authority.check(tip, tip_only=True))]  # trust.verify: tip: an admin's tip, nothing else
    if last is None:
        return authority.from_trust_root(tip)  # a first sync: trust starts at the local allowed_signers
    stop: str | None = last
    if not repo.has(last) or not repo.is_ancestor(last, tip.sha):
        stop = _same_signed_content(repo, last, tip.sha)
        if stop is None and not allow_rewind:
            raise RefusedError(
                f"the remote's {rules.branch} ({tip.sha[:12]}) does not descend from the last applied commit "
                f"{last[:12]}: history was rewound or replaced; refusing (non-fast-forward)",
                reason="non-fast-forward",
                hint=f"if an admin really rewrote the history, run once: {rules.rewind_command}",
            )
        if stop is None:
            return authority.from_trust_root(tip)  # a rewound history: trust starts afresh
    commits = list(repo.ancestors(tip.sha, stop))
    _check_dates(rules, state, commits, tip)
    if not rules.verify_all:
        return [(tip, authority.check(tip, tip_only=True)), *((c, None) for c in commits if c.sha != tip.sha)]
    signed = {c.sha: authority.check(c) for c in topological(commits)}
    return [(c, signed[c.sha]) for c in commits]


def _same_signed_content(repo: Repository, last: str, tip: str) -> str | None:
    """A commit in the tip's history with the same signed content as the
    last applied one: the honest original of a re-encoded copy this node
    applied (or the other way round).  Walks the whole history, but only
    when the tip does not descend from the last applied commit."""
    if not repo.has(last):
        return None
    wanted = repo.commit(last).payload
    return next((info.sha for info in repo.ancestors(tip) if info.payload == wanted), None)


def _check_dates(rules: Rules, state: State, commits: list[CommitInfo], tip: CommitInfo) -> None:
    """On the first-parent chain, refuse a commit much older than the last
    applied one: committer dates are the signer's to choose, so a key that
    was retired (``valid-before``) could otherwise still sign "in the past"."""
    if state.commit_time is None:
        return
    floor = state.commit_time - rules.max_clock_skew
    by_sha = {c.sha: c for c in commits}
    info: CommitInfo | None = tip
    while info is not None:
        if info.committer_time < floor:
            raise RefusedError(
                f"commit {info.sha[:12]} ({info.summary!r}) is dated {_iso(info.committer_time)}, more than "
                f"{rules.max_clock_skew:g} s before the last applied commit ({_iso(state.commit_time)}); "
                "refusing a backdated commit (trust.max_clock_skew); nothing was installed",
                reason="backdated",
            )
        info = by_sha.get(info.parents[0]) if info.parents else None


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


def topological(commits: Sequence[CommitInfo]) -> list[CommitInfo]:
    """``commits`` parents first (a linear range is just reversed)."""
    inside = {c.sha: c for c in commits}
    done: set[str] = set()
    ordered: list[CommitInfo] = []
    for start in reversed(commits):
        stack = [(start, False)]
        while stack:
            commit, expanded = stack.pop()
            if commit.sha in done:
                continue
            if expanded:
                done.add(commit.sha)
                ordered.append(commit)
                continue
            stack.append((commit, True))
            stack.extend((inside[p], False) for p in commit.parents if p in inside and p not in done)
    return ordered
