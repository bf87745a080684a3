"""One sync: the pipeline of DESIGN.md §1, all or nothing.

fetch → rollback guard → signatures → tree → validation (the code path of
``syncd check``) → own-key check → plan → apply → state.  Any failure before
``apply`` leaves every file on disk as it was; the error says why, with a
stable reason and the exit code of its class.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from syncd.apply import State, apply_plan, installed_reader, load_state, locked, read_installed, save_state
from syncd.config import Config, ConfigError
from syncd.errors import RefusedError
from syncd.findings import Finding, Severity
from syncd.nodekey import private_key_publics
from syncd.plan import Plan, make_plan
from syncd.policy import DEFAULT_POLICY, parse_policy
from syncd.signers import AllowedSigner, SignatureError, parse_allowed_signers, verify_signed_object
from syncd.source import CommitInfo, GitStore, UnsafeTreeError
from syncd.validate import Report, validate_network

LOCK_TIMEOUT = 300.0  # seconds to wait for another sync of the same network


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

    @property
    def changed(self) -> bool:
        """Whether host files on disk changed (and tincd should reload)."""
        return self.status == "applied" and self.plan.changes_files


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


def sync_once(config: Config, *, dry_run: bool = False, allow_rewind: bool = False) -> SyncResult:
    signers = load_signers(config)
    with locked(config.state_dir, LOCK_TIMEOUT):
        store = GitStore(config.state_dir / "repo.git")
        try:
            return _sync(config, store, signers, dry_run=dry_run, allow_rewind=allow_rewind)
        finally:
            store.close()


def _sync(
    config: Config, store: GitStore, signers: list[AllowedSigner], *, dry_run: bool, allow_rewind: bool
) -> SyncResult:
    state = load_state(config.state_dir)
    tip, url = store.fetch(config.repo.urls, config.repo.branch, config.repo.ssh_command)

    new_commits = _verify_history(config, store, signers, state, tip, allow_rewind)
    tip_info = store.commit(tip)
    signer = verify_signed_object(tip_info.payload, tip_info.signature, signers, tip_info.committer_time).principal

    if tip == state.last_applied and not dry_run:
        # Nothing new: if every managed file is still exactly as installed
        # (by stat), there is no need to read and validate the tree again.
        installed, stale = read_installed(config.tinc.hosts_dir, state.manifest)
        if not stale and all(name in installed for name in state.manifest):
            return SyncResult("unchanged", tip, signer, url, Plan(), 0, state.last_applied)

    report, desired = read_and_validate(store, tip, installed_reader(config.tinc.hosts_dir))
    _check_own_key(config, report, tip)
    installed, stale = read_installed(config.tinc.hosts_dir, state.manifest)
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
        return SyncResult("unchanged", tip, signer, url, plan, 0, state.last_applied, warnings)
    manifest = apply_plan(config.tinc.hosts_dir, plan, state.manifest)
    store.pin_applied(tip)
    save_state(
        config.state_dir,
        State(tip, signer, tip_info.committer_time, time.time(), manifest, state.extra),
    )
    return SyncResult("applied", tip, signer, url, plan, new_commits, state.last_applied, warnings)


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
    store: GitStore, commit: str, reuse: Callable[[str], bytes | None] | None = None
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
    report = validate_network(policy, entries, policy.hosts_dir, policy_findings)
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
