"""Which offered tip a pass applies, and what each URL is to the node.

Every URL of ``repo.url`` + ``repo.mirrors`` is asked for its tip in each
pass (``git.store.GitStore.fetch``); any of them may be lagging, frozen or
hostile, since trust comes from the signatures alone.  ``apply_newest``
tries the offered tips, newest first, with the whole pipeline
(``pipeline.run_pass``): the first that passes every rule is applied, and a
refused one costs nothing but its check (docs/trust.md, "Mirrors").

The order:

1. tips that descend from the applied commit (all of them on a first sync),
   the newest first: a tip that another offered tip contains comes after
   it; of two where neither contains the other, the one with the longer
   first-parent history after the applied commit first, then the later
   committer date, then the lower commit id (and the pass warns);
2. tips that neither descend from the applied commit nor precede it
   (another line of history: the rollback guard refuses them unless the
   node applied a commit that line does not contain, docs/trust.md,
   "A substituted branch");
3. the applied commit itself;
4. only when nothing else is offered: tips the applied commit contains
   (the rollback guard refuses them, naming the URL).

When every URL offers the applied commit nothing is compared: the pass is
its refs requests and the no-op of ``run_pass``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from syncd.errors import Reason, RefusedError, SyncdError
from syncd.sync.ports import AHEAD, BEHIND, CURRENT, FAILING, FORKED, UrlState

if TYPE_CHECKING:
    from syncd.signing.commits import CommitInfo
    from syncd.sync.ports import SyncResult


class History(Protocol):
    """What the choice reads of the store (a part of ``ports.Repository``)."""

    def commit(self, sha: str) -> CommitInfo: ...
    def has(self, sha: str) -> bool: ...
    def is_ancestor(self, ancestor: str, descendant: str) -> bool: ...


Offered = tuple[str, str | None, SyncdError | None]  # (redacted URL, its tip or None, why none)

TIE_RULE = (
    "the longer first-parent history after the applied commit, then the later committer date, then the lower commit id"
)


def apply_newest(
    repo: History,
    applied: Callable[[], str | None],
    offers: Sequence[Offered],
    run: Callable[[str, str], SyncResult],
    on_states: Callable[[tuple[UrlState, ...]], None],
    previous: Callable[[], Sequence[UrlState]] = tuple,
) -> SyncResult:
    """Run ``run(tip, url)`` on each offered tip in the module's order until
    one passes; its result carries each URL's state (``on_states`` gets them
    too, before a refusal is raised).  When every tip is refused, the first
    one's refusal is raised (naming the URL, when there are several).
    ``applied()`` reads the last applied commit, only when two URLs offer
    different tips: the no-op pass reads nothing more.  ``previous()``: the
    URLs' states of the last pass (read only then, too); a tip they settled against the same
    applied commit (behind it, or refused as another line of history) is
    not compared or checked again, so such a URL costs only its refs
    request (what settles it, the applied commit and the audit log, has not
    changed)."""
    offered = [(url, tip) for url, tip, _ in offers if tip is not None]
    last = applied() if len({tip for _, tip in offered}) > 1 else None
    settled = _settled(previous(), last) if last is not None else {}
    order = candidates(repo, last, [(u, t) for u, t in offered if t not in settled]) or candidates(repo, last, offered)
    refused: dict[str, RefusedError] = {}
    for tip, url in order:
        try:
            result = run(tip, url)
        except RefusedError as exc:
            refused[tip] = exc
            continue
        states = url_states(repo, result.commit, offers, refused, settled)
        on_states(states)
        notes = _tie_warnings(repo, last, result.commit, order) if len(order) > 1 else ()
        notes += _refusal_warnings(states)
        return replace(result, urls=states, warnings=(*result.warnings, *notes))
    on_states(url_states(repo, applied(), offers, refused, settled))
    first, url = order[0][0], order[0][1]
    refusal = refused[first]
    if len(offers) > 1:
        raise type(refusal)(f"{refusal.message} (offered by {url})", reason=refusal.reason, hint=refusal.hint)
    raise refusal


def candidates(repo: History, last: str | None, offered: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(tip, first URL offering it) in the order a pass tries them."""
    by_tip: dict[str, str] = {}
    for url, tip in offered:
        by_tip.setdefault(tip, url)
    tips = list(by_tip)
    if len(tips) <= 1:
        return [(tip, by_tip[tip]) for tip in tips]
    known = last is not None and repo.has(last)
    ahead, forks, behind, current = [], [], [], []
    for tip in tips:
        if tip == last:
            current.append(tip)
        elif last is None or (known and repo.is_ancestor(last, tip)):
            ahead.append(tip)
        elif known and repo.is_ancestor(tip, last):
            behind.append(tip)
        else:
            forks.append(tip)

    def key(tip: str) -> tuple[int, int, str]:
        return (-first_parent_depth(repo, tip, last), -repo.commit(tip).committer_time, tip)

    newest = [t for t in ahead if not any(o != t and repo.is_ancestor(t, o) for o in ahead)]
    contained = [t for t in ahead if t not in newest]
    order = sorted(newest, key=key) + sorted(contained, key=key) + sorted(forks, key=key) + current
    return [(tip, by_tip[tip]) for tip in order or sorted(behind, key=key)]


def first_parent_depth(repo: History, tip: str, base: str | None) -> int:
    """The commits on ``tip``'s first-parent chain down to ``base`` (not
    counted), or down to the root commit when the chain does not pass
    through ``base``."""
    count, at = 0, tip
    while at != base:
        count += 1
        parents = repo.commit(at).parents
        if not parents:
            break
        at = parents[0]
    return count


def _settled(previous: Sequence[UrlState], last: str | None) -> dict[str, UrlState]:
    """The tips the last pass found behind ``last`` or refused as another
    line of history against it (``non-fast-forward``: a verdict that only a
    new applied commit, or a new audit log line with it, could change)."""
    if last is None:
        return {}
    return {
        s.tip: s
        for s in previous
        if s.tip is not None
        and s.against == last
        and (s.state == BEHIND or (s.state == FORKED and s.reason == Reason.NON_FAST_FORWARD))
    }


def url_states(
    repo: History,
    applied: str | None,
    offers: Sequence[Offered],
    refused: dict[str, RefusedError],
    settled: dict[str, UrlState] | None = None,
) -> tuple[UrlState, ...]:
    """Each URL against the applied commit: current, behind (the applied
    commit contains its tip), ahead (its tip contains the applied commit,
    not applied: refused, or a dry run), forked (neither) or failing.
    ``settled``: states already known against ``applied``, reused."""
    known: dict[str, str] = {}
    kept = {tip: s for tip, s in (settled or {}).items() if s.against == applied and tip not in refused}

    def state_of(tip: str) -> str:
        if tip not in known:
            if tip == applied:
                known[tip] = CURRENT
            elif applied is None or not repo.has(applied):
                known[tip] = AHEAD
            elif repo.is_ancestor(tip, applied):
                known[tip] = BEHIND
            else:
                known[tip] = AHEAD if repo.is_ancestor(applied, tip) else FORKED
        return known[tip]

    states = []
    for url, tip, error in offers:
        if tip is None:
            reason = error.reason if error is not None else None
            states.append(UrlState(url, None, FAILING, error.message if error else None, reason, applied))
        elif tip in kept:
            states.append(replace(kept[tip], url=url))
        else:
            why = refused.get(tip)
            detail, reason = (why.message, why.reason) if why is not None else (None, None)
            states.append(UrlState(url, tip, state_of(tip), detail, reason, applied))
    return tuple(states)


def _tie_warnings(repo: History, last: str | None, chosen: str, order: list[tuple[str, str]]) -> tuple[str, ...]:
    """Two offered tips that both descend from the applied commit, neither
    containing the other: say which was taken, and by which rule."""
    if last is not None and not (repo.has(last) and repo.is_ancestor(last, chosen)):
        return ()
    tips = [tip for tip, _ in order]
    if chosen not in tips:
        return ()
    url = order[tips.index(chosen)][1]
    notes = []
    for tip, other in order[tips.index(chosen) + 1 :]:  # those before it were refused
        if tip == last or repo.is_ancestor(tip, chosen) or repo.is_ancestor(chosen, tip):
            continue
        if last is not None and not repo.is_ancestor(last, tip):
            continue
        notes.append(
            f"{other} offers {tip[:12]} and {url} offers {chosen[:12]}: two signed lines of history, neither "
            f"containing the other; applied {chosen[:12]} by the rule: {TIE_RULE}. An admin should merge them "
            '(docs/trust.md, "Mirrors")'
        )
    return tuple(notes)


def _refusal_warnings(states: tuple[UrlState, ...]) -> tuple[str, ...]:
    return tuple(
        f"{s.url} offers {s.tip[:12]} ({s.state}), refused: {s.detail.splitlines()[0]}"
        for s in states
        if s.tip is not None and s.detail is not None
    )
