"""One sync: the pipeline of DESIGN.md §1, all or nothing.

fetch → rollback guard → signatures → tree → validation (the code path of
``syncd check``) → own-key check → plan → apply → state.  Any failure before
``apply`` leaves every file on disk as it was; the error says why, with a
stable reason and the exit code of its class.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from syncd.config import Config
from syncd.errors import (
    ConfigError,
    RefusedError,
    SignatureError,
    SyncdError,
    TransientError,
    UnsafeTreeError,
    outcome,
)
from syncd.fetch import FetchLimits
from syncd.findings import Finding, Severity
from syncd.hostsdir import apply_plan, installed_reader, read_installed
from syncd.metrics import write_metrics
from syncd.nodekey import private_key_publics
from syncd.plan import Plan, make_plan
from syncd.policy import DEFAULT_POLICY, parse_policy
from syncd.reload import Reloaded, reload_tinc
from syncd.signers import AllowedSigner, parse_allowed_signers, verify_signed_object
from syncd.source import APPLIED_REF, FETCHED_REF, STORE_DAMAGE, CommitInfo, GitStore
from syncd.state import FETCH_LOCK_FILE, State, load_health, load_state, locked, save_health, save_state
from syncd.validate import ParseCache, Report, validate_network

LOCK_TIMEOUT = 300.0  # seconds to wait for another sync of the same network
COARSE_CLOCK_MARGIN = 0.05  # seconds; a kernel tick is at most 10 ms (HZ=100)


@dataclass(frozen=True, slots=True)
class SyncResult:
    status: str  # "applied", "unchanged" or "planned" (dry run)
    commit: str
    signer: str | None
    url: str
    plan: Plan
    new_commits: int = 0
    previous: str | None = None  # the commit applied before this sync
    warnings: tuple[str, ...] = field(default_factory=tuple)
    reloaded: Reloaded | None = None
    commit_time: int | None = None  # the committer time of ``commit`` (for staleness)

    def tip_age(self, now: float) -> float | None:
        return None if self.commit_time is None else now - self.commit_time

    def __post_init__(self) -> None:
        # a reload that was due and did not happen (tincd not running) is
        # a warning like the findings': `sync` prints it, `run` logs it
        note = self.reloaded.warning if self.reloaded is not None else None
        if note is not None and note not in self.warnings:
            object.__setattr__(self, "warnings", (*self.warnings, note))


def load_signers(config: Config) -> list[AllowedSigner]:
    path = config.trust.allowed_signers
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"trust.allowed_signers: {path}: cannot read: {exc.strerror}") from None
    signers = parse_allowed_signers(text, str(path))
    if not signers:
        raise ConfigError(f"trust.allowed_signers: {path}: no signer is listed")
    return signers


@dataclass(frozen=True, slots=True)
class Fetched:
    """What the fetch phase brought: a tip whose signature verified, whose
    objects are all in the store, and where it came from."""

    tip: str
    url: str
    signer: str


def sync_once(
    config: Config,
    *,
    dry_run: bool = False,
    allow_rewind: bool = False,
    fetch: bool = True,
    parse_cache: ParseCache | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SyncResult:
    """One pass of the pipeline.  Its outcome (success, or any failure with
    ``errors.outcome``'s reason) is recorded in ``health.json`` for
    ``status`` and metrics, while the network's lock is held: a pass that
    could not take the lock records nothing, since the pass that holds it
    records its own.  A Ctrl-C is not recorded: it says nothing about the node.

    The fetch runs under a lock of its own (``fetch.lock``), not the
    network's: a fetch waiting on a slow server (up to ``repo.timeout`` per
    URL) never holds up a drift repair, which needs only the store's
    complete objects and the network's lock.

    ``fetch=False`` re-applies the last applied commit from the local store
    (drift repair: no network, same verification and validation).
    ``parse_cache`` lets a long-running caller skip re-parsing unchanged
    host files (see ``validate_network``); ``cancel()`` turning true stops a
    fetch in flight (``KeyboardInterrupt``)."""
    fetched: Fetched | None = None
    if fetch:
        try:
            fetched = _fetch(config, cancel)
        except Exception as exc:
            if not dry_run:
                with contextlib.suppress(TransientError), locked(config.state_dir, LOCK_TIMEOUT):
                    record_outcome(config, exc)
            raise
    with locked(config.state_dir, LOCK_TIMEOUT):
        try:
            signers = load_signers(config)
            result = _sync(
                config,
                signers,
                fetched,
                dry_run=dry_run,
                allow_rewind=allow_rewind,
                parse_cache=parse_cache,
            )
        except Exception as exc:
            if not dry_run:
                record_outcome(config, exc)
            raise
        if not dry_run:
            record_outcome(config, result)
        return result


def _fetch(config: Config, cancel: Callable[[], bool] | None) -> Fetched:
    """The fetch phase: the tip of the first URL whose answer holds up,
    verified and complete in the store (``GitStore.fetch``)."""
    signers = load_signers(config)
    signed_by: dict[str, str] = {}

    def verify_tip(info: CommitInfo) -> None:
        signed_by[info.sha] = verify_commit(info, signers)

    with locked(config.state_dir, LOCK_TIMEOUT, FETCH_LOCK_FILE):
        store = GitStore(config.state_dir / "repo.git", writes=FETCHED_REF)
        try:
            tip, url = store.fetch(config.repo.urls, config.repo.branch, fetch_limits(config), verify_tip, cancel)
        finally:
            store.close()
    return Fetched(tip, url, signed_by[tip])


def record_outcome(config: Config, result: SyncResult | Exception) -> None:
    """Record a pass in ``health.json`` and the metrics file.  The caller
    holds the network's lock (``state.locked``): two passes writing health at
    once could count a failure twice or lose one."""
    now = time.time()
    health = load_health(config.state_dir)
    if isinstance(result, SyncResult):
        health = replace(health, last_pass_at=now, last_outcome=result.status, last_success_at=now, failures=0)
    else:
        failure = outcome(result)
        health = replace(
            health,
            last_pass_at=now,
            last_outcome=failure.reason,
            last_error=failure.message,
            last_error_reason=failure.reason,
            last_error_at=now,
            failures=health.failures + 1,
        )
    # Neither a full disk nor an unreadable state file may hide the pass's
    # own outcome, which the caller returns or raises next.
    with contextlib.suppress(OSError, SyncdError):
        save_health(config.state_dir, health)
    if config.metrics_file is not None:
        with contextlib.suppress(OSError, SyncdError):
            write_metrics(config.metrics_file, config.net, load_state(config.state_dir), health, config.trust.max_age)


def _sync(
    config: Config,
    signers: list[AllowedSigner],
    fetched: Fetched | None,
    *,
    dry_run: bool,
    allow_rewind: bool,
    parse_cache: ParseCache | None = None,
) -> SyncResult:
    state = load_state(config.state_dir)
    if fetched is not None:
        tip, url = fetched.tip, fetched.url
    elif state.last_applied is None:
        return SyncResult("unchanged", "", None, "(local store)", Plan())
    else:
        tip, url = state.last_applied, "(local store)"
    store = GitStore(config.state_dir / "repo.git", writes=APPLIED_REF)
    try:
        result = _sync_from(config, store, signers, state, tip, url, fetched, dry_run, allow_rewind, parse_cache)
        return replace(result, commit_time=store.commit(tip).committer_time)
    finally:
        store.close()


def _sync_from(
    config: Config,
    store: GitStore,
    signers: list[AllowedSigner],
    state: State,
    tip: str,
    url: str,
    fetched: Fetched | None,
    dry_run: bool,
    allow_rewind: bool,
    parse_cache: ParseCache | None,
) -> SyncResult:
    try:
        tip_info = store.commit(tip)
        signer = fetched.signer if fetched is not None else verify_commit(tip_info, signers)
        new_commits = _verify_history(config, store, signers, state, tip_info, allow_rewind)
    except STORE_DAMAGE as exc:
        raise store.repaired(f"{type(exc).__name__}: {exc}") from None

    installed, stale = read_installed(config.tinc.hosts_dir, state.manifest)
    # Nothing new, and every managed file still exactly as installed (by
    # stat): no need to read and validate the tree again.
    if tip == state.last_applied and not dry_run and not stale and all(name in installed for name in state.manifest):
        reloaded = _reload(config, state) if state.reload_pending else None
        return SyncResult("unchanged", tip, signer, url, Plan(), 0, state.last_applied, reloaded=reloaded)

    try:
        report, desired = read_and_validate(store, tip, installed_reader(config.tinc.hosts_dir), parse_cache)
    except STORE_DAMAGE as exc:
        raise store.repaired(f"{type(exc).__name__}: {exc}") from None
    _check_own_key(config, report, tip)
    plan = make_plan(desired, installed, {n: f.blob for n, f in state.manifest.items()})
    warnings = tuple(f.format_text() for f in report.findings if f.severity is Severity.WARNING)

    if dry_run:
        return SyncResult("planned", tip, signer, url, plan, new_commits, state.last_applied, warnings)
    if (
        tip == state.last_applied
        and not plan.changes_files
        and not plan.adopt
        and not stale
        and set(state.manifest) == set(desired)
    ):
        reloaded = _reload(config, state) if state.reload_pending else None
        return SyncResult("unchanged", tip, signer, url, plan, 0, state.last_applied, warnings, reloaded)
    previous = state.last_applied
    if plan.changes_files:
        _after_last_reload_second(state)
    manifest = apply_plan(config.tinc.hosts_dir, plan, state.manifest)
    store.pin_applied(tip)
    state = replace(
        state,
        last_applied=tip,
        signer=signer,
        commit_time=tip_info.committer_time,
        applied_at=time.time(),
        manifest=manifest,
        reload_pending=state.reload_pending or plan.changes_files,
    )
    save_state(config.state_dir, state)
    reloaded = _reload(config, state) if state.reload_pending else None
    return SyncResult("applied", tip, signer, url, plan, new_commits, previous, warnings, reloaded)


def stale_warning(config: Config, result: SyncResult, now: float) -> str | None:
    """Why the applied tip is too old (``trust.max_age``), or None.  A
    mirror that keeps serving an old signed tip (a freeze attack) looks like
    a quiet network otherwise; admins keep a network fresh with a signed
    heartbeat commit."""
    age, limit = result.tip_age(now), config.trust.max_age
    if age is None or limit is None or age <= limit:
        return None
    return (
        f"the newest signed commit ({result.commit[:12]}) is {age / 86400:.1f} days old, over trust.max_age "
        f"({limit / 86400:g} days): stale; a mirror may be serving an old tip, or the admins owe a heartbeat commit"
    )


def fetch_limits(config: Config) -> FetchLimits:
    repo = config.repo
    return FetchLimits(repo.timeout, repo.max_fetch_bytes, repo.ssh_command, repo.ca_file)


def verify_commit(info: CommitInfo, signers: list[AllowedSigner]) -> str:
    """The principal that signed ``info``; ``SignatureError`` naming the
    commit otherwise, and for a signature not in git's own encoding (a
    re-encoded copy would fork this node away from the honest history)."""
    what = f"commit {info.sha[:12]} ({info.summary!r})"
    if info.noncanonical is not None:
        raise SignatureError(
            f"{what}: {info.noncanonical}: a copy of a signed commit re-encoded by the server or a mirror; "
            "nothing was installed"
        )
    try:
        return verify_signed_object(info.payload, info.signature, signers, info.committer_time).principal
    except SignatureError as exc:
        raise SignatureError(f"{what}: {exc.message}; nothing was installed") from None


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


def _reload(config: Config, state: State) -> Reloaded:
    """Reload tincd; on success the state no longer has a reload pending.
    On failure the files stay installed, the reload stays pending and the
    error (exit 3) makes the next pass retry.  tincd not running is not a
    failure: it reads every host file when it starts, so nothing stays
    pending, and the result carries the warning (``SyncResult.warnings``)."""
    reloaded = reload_tinc(config.tinc, config.net)
    if reloaded.method == "none":
        save_state(config.state_dir, replace(state, reload_pending=False))
    else:
        save_state(
            config.state_dir,
            replace(state, reload_pending=False, last_reload=time.time(), reloads=state.reloads + 1),
        )
    return reloaded


def _verify_history(
    config: Config,
    store: GitStore,
    signers: list[AllowedSigner],
    state: State,
    tip: CommitInfo,
    allow_rewind: bool,
) -> int:
    """The rollback guard, the clock guard and the signature policy for the
    commits after the last applied one (the tip itself was verified before);
    returns how many new commits there are.  Raises ``RefusedError`` naming
    the offending commit."""
    last = state.last_applied
    if last is None or tip.sha == last:
        return 0  # first sync: the tip alone is checked (by the caller)
    stop: str | None = last
    if not store.has(last) or not store.is_ancestor(last, tip.sha):
        stop = _same_signed_content(store, last, tip.sha)
        if stop is None and not allow_rewind:
            raise RefusedError(
                f"the remote's {config.repo.branch} ({tip.sha[:12]}) does not descend from the last applied commit "
                f"{last[:12]}: history was rewound or replaced; refusing (non-fast-forward)",
                reason="non-fast-forward",
                hint=f"if an admin really rewrote the history, run once: {config.command('sync --allow-rewind')}",
            )
        if stop is None:
            stop = last if store.has(last) else None
    commits = list(store.ancestors(tip.sha, stop))
    if stop is None:
        return 1  # a rewound history with nothing in common: the tip
    _check_dates(config, state, commits, tip)
    if config.trust.verify == "all":
        for info in commits:
            if info.sha != tip.sha:
                verify_commit(info, signers)
    return len(commits)


def _same_signed_content(store: GitStore, last: str, tip: str) -> str | None:
    """A commit in the tip's history with the same signed content as the
    last applied one: the honest original of a re-encoded copy this node
    applied (or the other way round).  Walks the whole history, but only
    when the tip does not descend from the last applied commit."""
    if not store.has(last):
        return None
    wanted = store.commit(last).payload
    return next((info.sha for info in store.ancestors(tip) if info.payload == wanted), None)


def _check_dates(config: Config, state: State, commits: list[CommitInfo], tip: CommitInfo) -> None:
    """On the first-parent chain, refuse a commit much older than the last
    applied one: committer dates are the signer's to choose, so a key that
    was retired (``valid-before``) could otherwise still sign "in the past"."""
    if state.commit_time is None:
        return
    floor = state.commit_time - config.trust.max_clock_skew
    by_sha = {c.sha: c for c in commits}
    info: CommitInfo | None = tip
    while info is not None:
        if info.committer_time < floor:
            when = _iso(info.committer_time)
            raise RefusedError(
                f"commit {info.sha[:12]} ({info.summary!r}) is dated {when}, more than "
                f"{config.trust.max_clock_skew:g} s before the last applied commit ({_iso(state.commit_time)}); "
                "refusing a backdated commit (trust.max_clock_skew); nothing was installed",
                reason="backdated",
            )
        info = by_sha.get(info.parents[0]) if info.parents else None


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


def read_and_validate(
    store: GitStore,
    commit: str,
    reuse: Callable[[str], bytes | None] | None = None,
    parse_cache: ParseCache | None = None,
) -> tuple[Report, dict[str, bytes]]:
    """The commit's policy and hosts directory, validated exactly as
    ``syncd check`` validates a working tree; and the host files to install
    (name → bytes).  Any error finding refuses the commit."""
    try:
        policy_data = store.read_policy(commit)
        if policy_data is None:
            policy, policy_findings = DEFAULT_POLICY, list[Finding]()
        else:
            policy, policy_findings = parse_policy(policy_data)
        entries = store.read_hosts(commit, policy.hosts_dir, policy.max_files, policy.max_file_bytes, reuse)
    except UnsafeTreeError as exc:
        raise RefusedError(
            f"commit {commit[:12]}: {exc.message}; nothing was installed", reason="unsafe-tree"
        ) from None
    report = validate_network(policy, entries, policy.hosts_dir, policy_findings, parse_cache)
    errors = [f for f in report.findings if f.severity is Severity.ERROR]
    if errors:
        codes = sorted({f.code for f in errors})
        details = "; ".join(f.format_text() for f in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise RefusedError(
            f"commit {commit[:12]} has invalid content [{', '.join(codes)}]: {details}{more}; nothing was installed",
            reason="invalid-content",
        )
    desired = {e.name: e.data for e in entries if e.name in report.hosts and e.data is not None}
    return report, desired


def _check_own_key(config: Config, report: Report, commit: str) -> None:
    host = report.hosts.get(config.node)
    if host is None:
        return
    repo_keys = {key.identity for key, _ in host.keys}
    for filename, key in private_key_publics(config.tinc.dir):
        if key.identity not in repo_keys:
            raise RefusedError(
                f"commit {commit[:12]}: {host.path} does not carry the public key of this node's "
                f"{Path(config.tinc.dir, filename)}; installing it would cut {config.node} off. "
                "Nothing was installed",
                reason="own-key-mismatch",
            )
