"""One sync: the pipeline of DESIGN.md §1, all or nothing.

fetch → rollback guard → signatures → tree → validation (the code path of
``syncd check``) → own-key check → plan → apply → state.  Any failure before
``apply`` leaves every file on disk as it was; the error says why, with a
stable reason and the exit code of its class.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from syncd.apply import (
    State,
    apply_plan,
    installed_reader,
    load_health,
    load_state,
    locked,
    read_installed,
    save_health,
    save_state,
)
from syncd.config import Config
from syncd.errors import ConfigError, RefusedError, SignatureError, SyncdError, UnsafeTreeError
from syncd.findings import Finding, Severity
from syncd.metrics import write_metrics
from syncd.nodekey import private_key_publics
from syncd.plan import Plan, make_plan
from syncd.policy import DEFAULT_POLICY, parse_policy
from syncd.reload import Reloaded, reload_tinc
from syncd.signers import AllowedSigner, parse_allowed_signers, verify_signed_object
from syncd.source import CommitInfo, GitStore
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

    def __post_init__(self) -> None:
        # a reload that was due and did not happen (tincd not running) is
        # a warning like the findings': `sync` prints it, `run` logs it
        note = self.reloaded.warning if self.reloaded is not None else None
        if note is not None and note not in self.warnings:
            object.__setattr__(self, "warnings", (*self.warnings, note))


def load_signers(config: Config) -> list[AllowedSigner]:
    path = config.trust.allowed_signers
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"trust.allowed_signers: {path}: cannot read: {exc.strerror}") from None
    signers = parse_allowed_signers(text, str(path))
    if not signers:
        raise ConfigError(f"trust.allowed_signers: {path}: no signer is listed")
    return signers


def sync_once(
    config: Config,
    *,
    dry_run: bool = False,
    allow_rewind: bool = False,
    fetch: bool = True,
    parse_cache: ParseCache | None = None,
) -> SyncResult:
    """One pass of the pipeline.  The outcome (success, or the error and its
    reason) is recorded in ``health.json`` for ``status`` and metrics.

    ``fetch=False`` re-applies the last applied commit from the local store
    (drift repair: no network, same verification and validation).
    ``parse_cache`` lets a long-running caller skip re-parsing unchanged
    host files (see ``validate_network``).
    ``parse_cache`` lets a long-running caller skip re-parsing unchanged
    host files (see ``validate_network``)."""
    try:
        signers = load_signers(config)
        with locked(config.state_dir, LOCK_TIMEOUT):
            store = GitStore(config.state_dir / "repo.git")
            try:
                result = _sync(
                    config,
                    store,
                    signers,
                    dry_run=dry_run,
                    allow_rewind=allow_rewind,
                    fetch=fetch,
                    parse_cache=parse_cache,
                )
            finally:
                store.close()
    except SyncdError as exc:
        if not dry_run:
            record_outcome(config, exc.reason, exc.message)
        raise
    except OSError as exc:
        if not dry_run:
            record_outcome(config, "io-error", str(exc))
        raise
    if not dry_run:
        record_outcome(config, result.status, None)
    return result


def record_outcome(config: Config, outcome: str, error: str | None) -> None:
    now = time.time()
    health = load_health(config.state_dir)
    if error is None:
        health = replace(health, last_pass_at=now, last_outcome=outcome, last_success_at=now, failures=0)
    else:
        health = replace(
            health,
            last_pass_at=now,
            last_outcome=outcome,
            last_error=error,
            last_error_reason=outcome,
            last_error_at=now,
            failures=health.failures + 1,
        )
    with contextlib.suppress(OSError):  # a full disk must not hide the real outcome
        save_health(config.state_dir, health)
        if config.metrics_file is not None:
            write_metrics(config.metrics_file, config.net, load_state(config.state_dir), health)


def _sync(
    config: Config,
    store: GitStore,
    signers: list[AllowedSigner],
    *,
    dry_run: bool,
    allow_rewind: bool,
    fetch: bool = True,
    parse_cache: ParseCache | None = None,
) -> SyncResult:
    state = load_state(config.state_dir)
    if fetch:
        tip, url = store.fetch(config.repo.urls, config.repo.branch, config.repo.ssh_command, config.repo.ca_file)
    elif state.last_applied is None:
        return SyncResult("unchanged", "", None, "(local store)", Plan())
    else:
        tip, url = state.last_applied, "(local store)"

    new_commits = _verify_history(config, store, signers, state, tip, allow_rewind)
    tip_info = store.commit(tip)
    signer = verify_signed_object(tip_info.payload, tip_info.signature, signers, tip_info.committer_time).principal

    installed, stale = read_installed(config.tinc.hosts_dir, state.manifest)
    # Nothing new, and every managed file still exactly as installed (by
    # stat): no need to read and validate the tree again.
    if tip == state.last_applied and not dry_run and not stale and all(name in installed for name in state.manifest):
        reloaded = _reload(config, state) if state.reload_pending else None
        return SyncResult("unchanged", tip, signer, url, Plan(), 0, state.last_applied, reloaded=reloaded)

    report, desired = read_and_validate(store, tip, installed_reader(config.tinc.hosts_dir), parse_cache)
    _check_own_key(config, report, tip)
    plan = make_plan(desired, installed, {n: f.sha256 for n, f in state.manifest.items()})
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
    tip: str,
    allow_rewind: bool,
) -> int:
    """The rollback guard and the signature policy; returns how many new
    commits there are.  Raises ``RefusedError`` naming the offending commit."""
    last = state.last_applied
    if last is None or tip == last:
        return 0  # first sync: the tip alone is checked (by the caller)
    stop: str | None = last
    if not store.has(last) or not store.is_ancestor(last, tip):
        if not allow_rewind:
            raise RefusedError(
                f"the remote's {config.repo.branch} ({tip[:12]}) does not descend from the last applied commit "
                f"{last[:12]}: history was rewound or replaced; refusing (non-fast-forward). "
                "If an admin really rewrote it, run `syncd sync --allow-rewind` once",
                reason="non-fast-forward",
            )
        stop = last if store.has(last) else None
    commits = list(store.ancestors(tip, stop))
    if stop is None:
        commits = commits[:1]  # a rewound history with nothing in common: the tip
    to_check: list[CommitInfo] = commits if config.trust.verify == "all" else commits[:1]
    for info in to_check:
        try:
            verify_signed_object(info.payload, info.signature, signers, info.committer_time)
        except SignatureError as exc:
            raise RefusedError(
                f"commit {info.sha[:12]} ({info.summary!r}): {exc.message}; nothing was installed",
                reason="signature",
            ) from None
    return len(commits)


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
