"""One pass of the pipeline of docs/architecture.md, against small interfaces.

``run_pass`` decides everything a pass does once a tip is at hand: the
rollback and clock guards, the signatures of the new commits, the tree's
validation (the code path of ``syncd check``), the own-key check, the plan,
the apply, the state, the reload.  It touches nothing itself: the
repository, the installed hosts directory, the state file and tincd are
``Ports`` (``ports.py``; ``agent.sync_once`` wires the real ones), so tests
drive every outcome with fakes (tests/test_pipeline.py) and test the real
ones on their own.

All or nothing: every check runs before the first write; a refusal raises
``RefusedError`` (exit 1) naming the commit and leaves the ports untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from syncd.errors import Reason
from syncd.findings import Severity
from syncd.node.state import Applied
from syncd.rules.authority import admins_valid_until
from syncd.rules.plan import Plan, keep_learned, make_plan
from syncd.sync.content import read_and_validate
from syncd.sync.history import verify_history
from syncd.sync.ports import Ports, Repository, Settings, Signed, StateFile, SyncResult

if TYPE_CHECKING:
    from syncd.node.hostsdir import FileStat
    from syncd.node.reload import Reloaded
    from syncd.node.state import State
    from syncd.rules.validate import ParseCache, Report
    from syncd.signing.commits import CommitInfo
    from syncd.tinc.keys import PublicKey

COARSE_CLOCK_MARGIN = 0.05  # seconds; a kernel tick is at most 10 ms (HZ=100)


def run_pass(
    ports: Ports,
    settings: Settings,
    tip: str,
    url: str,
    *,
    dry_run: bool = False,
    allow_rewind: bool = False,
    parse_cache: ParseCache | None = None,
) -> SyncResult:
    """One pass for ``tip`` (fetched from ``url``).  See the module doc."""
    state = ports.state.load()
    tip_info = ports.repo.commit(tip)
    history = verify_history(
        ports.repo, ports.authority, settings, state, tip_info, allow_rewind, applied=ports.applied_log
    )
    new_commits = len(history)
    signer = history[0][1] if history and history[0][1] is not None else Signed(state.signer or "")
    base = SyncResult("unchanged", tip, signer.name or None, url, Plan(), previous=state.last_applied)
    base = replace(base, commit_time=tip_info.committer_time)

    installed, stale = ports.hosts.scan(state.manifest)
    settled = state.held_back is None and state.manifest.keys() <= installed.keys()
    if tip == state.last_applied and not dry_run and not stale and settled:
        # nothing new, every managed file as installed (by stat): nothing is read
        return _unchanged(ports, state, base)

    report, desired, ids = read_and_validate(
        ports.repo,
        tip,
        installed=installed,
        read_installed=ports.hosts.read,
        index=ports.index,
        parse_cache=parse_cache,
        save_index=not dry_run,
    )
    held = own_key_mismatch(ports.own_keys, settings, report, tip)
    if held is not None:  # the node's own file stays as installed; the rest is applied
        desired, ids = _HeldBack.of(ports.hosts.read, desired, ids, installed, settings.node)
    plan = make_plan(desired, installed, {n: f.blob for n, f in state.manifest.items()}, ids)
    changed = {n for n in plan.update if n in stale or n not in state.manifest or state.manifest[n].learned}
    plan = keep_learned(plan, ports.hosts.read, changed)  # tincd's own appends are not drift
    warnings = tuple(f.format_text() for f in report.findings if f.severity is Severity.WARNING)
    warnings += (held,) if held else ()
    base = replace(base, plan=plan, new_commits=new_commits, warnings=warnings, learned=_new_keys(plan, state))
    if dry_run:
        return replace(base, status="planned")
    if tip == state.last_applied and not plan.changes_files:
        # the one "unchanged" path: a touched but identical file, an adopted
        # one, is recorded quietly (its new stat), never reported as a change
        manifest = ports.hosts.apply(plan, state.manifest, stale)
        if manifest != state.manifest or held != state.held_back:
            state = replace(state, manifest=manifest, held_back=held)
            ports.state.save(state)
        return _unchanged(ports, state, base)
    if plan.changes_files:
        _after_last_reload_second(state)
    manifest = ports.hosts.apply(plan, state.manifest, stale)
    ports.pin_applied(tip)
    now = time.time()
    if tip != state.last_applied:
        ports.state.log(_audit(ports.repo, history, now))
    state = replace(
        state,
        last_applied=tip,
        signer=signer.name,
        commit_time=tip_info.committer_time,
        applied_at=now,
        manifest=manifest,
        reload_pending=state.reload_pending
        or plan.changes_files
        or _unrecorded(state.manifest, installed, stale, plan),
        held_back=held,
        admins_until=admins_valid_until(ports.authority.admins_at(tip), now),
        max_blob_bytes=report.policy.max_blob_bytes,
    )
    if not state.reload_pending:
        ports.state.save(state)
        return replace(base, status="applied")
    return replace(base, status="applied", reloaded=_reload(ports.reload, ports.state, state))


def _unrecorded(
    recorded: Mapping[str, FileStat], installed: Mapping[str, str], stale: Collection[str], plan: Plan
) -> bool:
    """Are files installed that the state does not record, as a pass leaves
    them when it stops between its writes and its one save of the state
    (which follows tincd's reload)?  Then tincd may not have read them, and
    this pass reloads it: a file that is already as the repository has it
    but recorded with other content, an adopted one, or a recorded one
    that is gone and no longer wanted.  (A file someone else made equal to
    the repository's is reloaded too: tincd may not have read it either.)"""
    if plan.adopt or recorded.keys() - installed.keys() - plan.ids.keys():
        return True
    ids = plan.ids
    return any(name in installed and installed[name] == ids.get(name) != recorded[name].blob for name in stale)


def _new_keys(plan: Plan, state: State) -> dict[str, str]:
    """The keys tincd appended that the last pass had not recorded yet."""
    known = state.manifest
    return {n: key for n, key in plan.learned.items() if n not in known or known[n].learned != key}


def _audit(repo: Repository, history: list[tuple[CommitInfo, Signed | None]], now: float) -> list[Applied]:
    """The log lines of the commits just applied, oldest first."""
    lines = []
    for info, signed in reversed(history):
        who = signed or Signed("", None, "")
        lines.append(
            Applied(
                commit=info.sha,
                committed_at=info.committer_time,
                applied_at=now,
                signer=who.name or None,
                key=who.key,
                role=who.role or None,
                files=repo.changed_paths(info.sha),
                summary=info.summary,
            )
        )
    return lines


def _unchanged(ports: Ports, state: State, base: SyncResult) -> SyncResult:
    reloaded = _reload(ports.reload, ports.state, state) if state.reload_pending else None  # from an earlier pass
    return replace(base, status="unchanged", new_commits=0, reloaded=reloaded)


def _reload(reload: Callable[[], Reloaded], states: StateFile, state: State) -> Reloaded:
    """Reload tincd, then save ``state`` (the pass's one save): on success
    it no longer has a reload pending.  On failure (``ReloadError``, exit 3)
    the files stay installed and the state is saved with the reload still
    pending for the next pass.  A pass that stops before the save leaves
    files the state does not record, and the next pass reloads
    (``_unrecorded``).  tincd not running is not a
    failure: it reads every host file when it starts, so nothing stays
    pending, and the result carries the warning."""
    try:
        reloaded = reload()
    except BaseException:
        states.save(state)  # the commit and its files are recorded, the reload still pending
        raise
    if reloaded.method == "none":
        states.save(replace(state, reload_pending=False))
    else:
        states.save(replace(state, reload_pending=False, last_reload=time.time(), reloads=state.reloads + 1))
    return reloaded


def _after_last_reload_second(state: State) -> None:
    """Wait, if needed, until the whole second of the last reload is over.

    tincd 1.0 drops (and so re-reads) a peer whose host file's mtime is
    *newer* than its previous reload, in whole seconds: a file written in the
    same second as that reload would look old and be missed.  This also keeps
    reloads at most one per second.  File times come from the kernel's
    coarse clock, which may lag ``time.time()`` by a tick: hence the margin.
    """
    if state.last_reload is None:
        return
    wait = math.floor(state.last_reload) + 1 + COARSE_CLOCK_MARGIN - time.time()
    if wait > 0:
        time.sleep(wait)


def own_key_mismatch(
    own_keys: Callable[[], list[tuple[str, PublicKey]]], settings: Settings, report: Report, commit: str
) -> str | None:
    """Why the repository's copy of this node's own host file is held back
    (None: it is not): it must name this node's keys, or installing it would
    cut the node off.  For each kind of key (RSA, Ed25519) the node has a
    private key of, a key of that kind in the file must be that very key,
    and at least one of the node's keys must be there.  A kind the file
    names no key of cuts nothing off: a tinc 1.1 node whose Ed25519 key is
    not in the repository yet still authenticates with its RSA key, and its
    1.1 peers learn the Ed25519 key then (``learnedkey``, docs/host-files.md)."""
    host = report.hosts.get(settings.node)
    if host is None:
        return None
    named: dict[str, set[bytes]] = {}
    for key, _ in host.keys:
        named.setdefault(key.algorithm, set()).add(key.identity)
    own = own_keys()
    for filename, key in own:
        if key.algorithm in named and key.identity not in named[key.algorithm]:
            return _held_back(settings, host.path, [k for k, _ in host.keys], commit, [(filename, key)])
    if own and not any(key.identity in named.get(key.algorithm, ()) for _, key in own):
        return _held_back(settings, host.path, [k for k, _ in host.keys], commit, own)
    return None


def _held_back(
    settings: Settings, path: str, repo_keys: list[PublicKey], commit: str, own: list[tuple[str, PublicKey]]
) -> str:
    from syncd.tinc.keys import describe_key

    has = ", ".join(describe_key(k) for k in repo_keys) or "no public key"
    holds = " and ".join(f"{describe_key(key)} ({settings.tinc_dir / filename})" for filename, key in own)
    return (
        f"{Reason.OWN_KEY_MISMATCH}: {path} in commit {commit[:12]} carries {has}, but this node holds {holds}; "
        f"installing it would cut {settings.node} off, so the installed hosts/{settings.node} is kept and the rest of "
        "the commit applied. Commit the node's public key to the repository, or install the private key it names"
    )


class _HeldBack(Mapping[str, bytes]):
    """The files to install, with the node's own file as installed (or
    left out, when none is installed)."""

    def __init__(self, desired: Mapping[str, bytes], name: str, read: Callable[[str], bytes | None] | None) -> None:
        self.desired, self.name, self.read = desired, name, read  # read None: no own file installed

    @classmethod
    def of(
        cls,
        read: Callable[[str], bytes | None],
        desired: Mapping[str, bytes],
        ids: Mapping[str, str],
        installed: Mapping[str, str],
        name: str,
    ) -> tuple[Mapping[str, bytes], dict[str, str]]:
        kept = dict(ids)
        if name in installed:
            kept[name] = installed[name]
        else:
            kept.pop(name, None)
        return cls(desired, name, read if name in installed else None), kept

    def __getitem__(self, name: str) -> bytes:
        if name != self.name:
            return self.desired[name]
        data = self.read(name) if self.read is not None else None
        if data is None:
            raise KeyError(name)
        return data

    def __iter__(self) -> Iterator[str]:
        return (n for n in self.desired if n != self.name or self.read is not None)

    def __contains__(self, name: object) -> bool:
        return name in self.desired and (name != self.name or self.read is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)
