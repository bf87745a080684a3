"""What the new commits must pass before their tree is read: the rollback
guard (the tip descends from the last applied commit, matched by signed
content), the clock guard (no commit dated in the future, none backdated
against its parents), the size guard (no blob over the policy's
``max_blob_bytes``) and the signature policy (every new commit signed and
authorized, with ``trust.verify: all``).  Pure: it reads commits through the
``Repository`` port and asks the ``Authority`` port (``ports.py``).

The clock guard judges each new commit against its own parents only, so a
range checked at once (``syncd verify OLD NEW``) and the same commits
applied one by one reach the same verdict on each."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from syncd.errors import Reason, RefusedError, UnsafeTreeError
from syncd.rules.policy import POLICY_FILE
from syncd.rules.units import format_duration, format_size
from syncd.signing.commits import CommitInfo

if TYPE_CHECKING:
    from syncd.node.state import State
    from syncd.sync.ports import Authority, Repository, Settings, Signed


def verify_history(
    repo: Repository,
    authority: Authority,
    settings: Settings,
    state: State,
    tip: CommitInfo,
    allow_rewind: bool,
    now: float | None = None,
    applied: Callable[[], Collection[str]] | None = None,
) -> list[tuple[CommitInfo, Signed | None]]:
    """The rollback guard, the clock and size guards and the authority of
    every new commit (``authority``): the commits after the last
    applied one, newest first, each with who signed it and in which role
    (None when ``trust.verify: tip`` left it unchecked).  Raises
    ``RefusedError`` naming the offending commit.  ``now``: the verifier's
    clock (default: the system's); ``applied()``: every commit this node
    applied (its audit log), for a substituted branch (``resumed_branch``)."""
    last = state.last_applied
    guard = _Guard(repo, settings, state, time.time() if now is None else now)
    if tip.sha == last:
        return []
    if last is None and not settings.verify_all:
        guard.check([tip], root=tip.sha)
        return [(tip, authority.check(tip, tip_only=True))]  # trust.verify: tip: an admin's tip, nothing else
    stop: str | None = last
    if last is not None and (not repo.has(last) or not repo.is_ancestor(last, tip.sha)):
        stop = _same_signed_content(repo, last, tip.sha)
        if stop is None and applied is not None:
            stop = resumed_branch(repo, last, tip.sha, applied)
        if stop is None and not allow_rewind:
            raise RefusedError(
                f"the remote's {settings.branch} ({tip.sha[:12]}) does not descend from the last applied commit "
                f"{last[:12]}: history was rewound or replaced; refusing (non-fast-forward)",
                reason=Reason.NON_FAST_FORWARD,
                hint=f"if an admin really rewrote the history, run once: {settings.rewind_command}",
            )
    if stop is None:  # a first sync, or a rewound history: trust starts at the local allowed_signers
        history = authority.from_trust_root(tip)
        guard.check([info for info, _ in history], root=history[-1][0].sha)
        return history
    commits = list(repo.ancestors(tip.sha, stop))
    if not settings.verify_all:
        guard.check(commits)
        return [(tip, authority.check(tip, tip_only=True)), *((c, None) for c in commits if c.sha != tip.sha)]
    signed = {}
    for info in guard.dates(commits):  # blobs and authority commit by commit: each reads the same trees
        guard.blobs_fit(info)
        signed[info.sha] = authority.check(info)
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


def resumed_branch(repo: Repository, last: str, tip: str, applied: Callable[[], Collection[str]]) -> str | None:
    """The applied commit a tip that does not descend from the last applied
    one resumes from, when the node was given a commit of another line of
    history (docs/trust.md, "A substituted branch"): the newest commit on
    the tip's first-parent chain that this node applied (its audit log),
    provided the tip itself is no commit the node applied nor one the last
    applied commit contains (never a step back), and has strictly more
    commits on its first-parent chain after that commit than the last
    applied one has.  None otherwise.  The commits after it are then checked
    like any new commits."""
    if not repo.has(last):
        return None
    done = applied()
    if tip in done or not done or repo.is_ancestor(tip, last):
        return None
    ahead, at = 0, tip
    while at not in done:
        parents = repo.commit(at).parents
        if not parents:
            return None  # no applied commit on its first-parent chain
        at, ahead = parents[0], ahead + 1
    base = at
    behind, at = 0, last
    while at != base:
        parents = repo.commit(at).parents
        if not parents:
            break  # the base is not on the applied commit's own first-parent chain: count all of it
        at, behind = parents[0], behind + 1
    return base if ahead > behind else None


class _Guard:
    """The clock and size guards over a set of new commits."""

    def __init__(self, repo: Repository, settings: Settings, state: State, now: float) -> None:
        self.repo, self.state, self.now = repo, state, now
        self.skew = settings.max_clock_skew
        self.limits: dict[str, int] = {}  # commit -> the max_blob_bytes of its policy

    def check(self, commits: Sequence[CommitInfo], root: str | None = None) -> None:
        """``dates``, then ``blobs_fit`` for each commit."""
        for info in self.dates(commits, root):
            self.blobs_fit(info)

    def dates(self, commits: Sequence[CommitInfo], root: str | None = None) -> list[CommitInfo]:
        """Refuse the first commit (parents first) that is dated in the
        future or backdated against a parent (``root``, where trust starts,
        is not compared with its parents); return ``commits`` parents first."""
        ordered = topological(commits)
        times = {c.sha: c.committer_time for c in commits}
        for info in ordered:
            self._not_future(info)
            if info.sha != root:
                for parent in info.parents:
                    self._not_backdated(info, parent, times)
        return ordered

    def _not_future(self, info: CommitInfo) -> None:
        if info.committer_time > self.now + self.skew:
            raise RefusedError(
                f"commit {info.sha[:12]} ({info.summary!r}) is dated {_iso(info.committer_time)}, more than "
                f"{format_duration(self.skew)} after the clock here ({_iso(self.now)}); refusing a future-dated "
                "commit (trust.max_clock_skew): every commit after it would look backdated; nothing was installed",
                reason=Reason.FUTURE_DATED,
            )

    def _not_backdated(self, info: CommitInfo, parent: str, times: dict[str, int]) -> None:
        """A commit older than a parent by more than the skew: a key retired
        by ``valid-before`` could otherwise still sign "in the past".  A
        parent applied before (not new here) dated further ahead of the clock
        that applied it than the skew (only an older syncd took such a
        commit) counts as dated at that clock: it cannot freeze the network."""
        when, applied = times.get(parent), None
        if when is None:  # applied before: not new here
            last = parent == self.state.last_applied and self.state.commit_time is not None
            when = self.state.commit_time if last else None
            when = self.repo.commit(parent).committer_time if when is None else when
            clock = self.state.applied_at if last and self.state.applied_at is not None else self.now
            if when > clock + self.skew:
                applied = clock
        floor = (when if applied is None else applied) - self.skew
        if info.committer_time < floor:
            counted = "" if applied is None else f", counted as {_iso(applied)}, when it was applied"
            raise RefusedError(
                f"commit {info.sha[:12]} ({info.summary!r}) is dated {_iso(info.committer_time)}, more than "
                f"{format_duration(self.skew)} before its parent {parent[:12]} ({_iso(when)}{counted}); refusing a "
                "backdated commit (trust.max_clock_skew); nothing was installed",
                reason=Reason.BACKDATED,
            )

    def blobs_fit(self, info: CommitInfo) -> None:
        """Every blob the commit adds fits its parent's ``max_blob_bytes``:
        the server's hook and every node's fetch agree on what they carry."""
        limit = self._limit(info.parents[0] if info.parents else None)
        changed = POLICY_FILE in self.repo.changed_paths(info.sha)
        self.limits[info.sha] = self._read_limit(info.sha) if changed else limit
        for path, size in self.repo.changed_blob_sizes(info.sha).items():
            if size > limit:
                raise UnsafeTreeError(
                    f"commit {info.sha[:12]} ({info.summary!r}): {path} is {size} bytes, over the policy's "
                    f"max_blob_bytes ({format_size(limit)}); nothing was installed"
                )

    def _limit(self, sha: str | None) -> int:
        if sha is None:
            from syncd.rules.policy import DEFAULT_POLICY

            return DEFAULT_POLICY.max_blob_bytes
        known = self.limits.get(sha)
        if known is None:
            known = self.limits[sha] = self._read_limit(sha)
        return known

    def _read_limit(self, sha: str) -> int:
        from syncd.rules.policy import policy_of

        return policy_of(self.repo.policy_bytes(sha))[0].max_blob_bytes


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
