"""One sync: the pipeline of docs/architecture.md, all or nothing.

fetch → rollback guard → signatures → tree → validation (the code path of
``syncd check``) → own-key check → plan → apply → state.  Any failure before
``apply`` leaves every file on disk as it was; the error says why, with a
stable reason and the exit code of its class.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from syncd.errors import FetchTimeoutError, SyncdError, TransientError, outcome
from syncd.node.config import Config, load_signers
from syncd.node.hostsdir import HostsDir
from syncd.node.parseindex import ParseIndexFile
from syncd.node.state import (
    FETCH_LOCK_FILE,
    StateDir,
    Trigger,
    load_health,
    load_state,
    locked,
    read_log,
    save_health,
)
from syncd.rules.plan import Plan
from syncd.sync.mirrors import Offered, apply_newest
from syncd.sync.noop import AppliedOnly, LoadedOnce, NoAuthority, NotUnchanged, loose_ref, store_refs_agree
from syncd.sync.pipeline import run_pass
from syncd.sync.ports import BEHIND, FAILING, FORKED, InstalledHosts, Ports, Settings, SyncResult, UrlState

if TYPE_CHECKING:
    from syncd.git.fetch import FetchLimits
    from syncd.node.parseindex import Record as IndexRecord
    from syncd.node.reload import Reloaded
    from syncd.rules.validate import ParseCache
    from syncd.signing.allowed_signers import AllowedSigner
    from syncd.tinc.keys import PublicKey

LOCK_TIMEOUT = 300.0  # seconds to wait for another sync of the same network


@dataclass(frozen=True, slots=True)
class Fetched:
    """What the fetch phase brought: each URL's offer (a tip whose signature
    verified and whose objects are all in the store, or why it offered
    none).  Which tip is applied, and who may have made it, is decided in
    the apply phase (``mirrors.apply_newest``, ``trust.RepoAuthority``)."""

    offers: tuple[Offered, ...]


def sync_once(
    config: Config,
    *,
    dry_run: bool = False,
    allow_rewind: bool = False,
    fetch: bool = True,
    parse_cache: ParseCache | None = None,
    hosts: InstalledHosts | None = None,
    cancel: Callable[[], bool] | None = None,
    progress: bool = False,
    trigger: Trigger | None = None,
    on_applied: Callable[[str], None] | None = None,
) -> SyncResult:
    """One pass of the pipeline.  Its outcome (success, or any failure with
    ``errors.outcome``'s reason) is recorded in ``health.json`` for
    ``status`` and metrics, while the network's lock is held: a pass that
    could not take the lock records nothing, since the pass that holds it
    records its own.  A Ctrl-C is not recorded: it says nothing about the node.
    The pass's duration, from its start to its outcome, is the result's
    ``duration_s`` and the metrics' ``syncd_pass_duration_seconds``.

    A pass first asks every URL for its tip alone (``git.probe``, in this
    process, under ``repo.timeout``): when each offers the applied commit
    or a tip settled against it, the pass runs without the store or the
    fetch child (``sync.noop``); anything else, the whole pass as below.

    The fetch runs under a lock of its own (``fetch.lock``), not the
    network's: a fetch waiting on a slow server (up to ``repo.timeout`` per
    URL) never holds up a drift repair, which needs only the store's
    complete objects and the network's lock.

    ``fetch=False`` re-applies the last applied commit from the local store
    (drift repair: no network, same verification and validation).
    ``parse_cache`` and ``hosts`` (a watched ``HostsDir``) spare a long-running caller
    re-parsing and re-stating unchanged files; ``cancel()`` turning true stops a fetch in
    flight (``KeyboardInterrupt``); ``trigger`` is recorded with the outcome; ``on_applied(commit)``
    is called once a fetched commit is installed, before tincd's reload: ``syncd run`` tells others then."""
    started = time.monotonic()
    fetched: Fetched | None = None
    if fetch and not dry_run and not allow_rewind:  # first its refs requests alone: a no-op pass is no more
        try:
            probed = _probe(config, cancel)
        except Exception as exc:
            _fetch_failed(config, exc, trigger, started)
            raise
        unchanged = (
            _unchanged_pass(config, probed, parse_cache, hosts, trigger, on_applied, started) if probed else None
        )
        if unchanged is not None:
            return unchanged
    if fetch:
        try:
            fetched = _fetch(config, cancel, progress)
        except Exception as exc:
            if not dry_run:
                _fetch_failed(config, exc, trigger, started)
            raise
    urls: list[tuple[UrlState, ...]] = []
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
                hosts=hosts,
                on_states=urls.append,
                on_applied=on_applied,
            )
        except Exception as exc:
            if not dry_run:
                record_outcome(config, exc, urls[-1] if urls else None, trigger, pass_duration(started))
            raise
        result = replace(result, duration_s=pass_duration(started))
        if not dry_run:
            record_outcome(config, result, result.urls or None, trigger, result.duration_s)
        return result


def _fetch_failed(config: Config, exc: Exception, trigger: Trigger | None, started: float) -> None:
    """Record a pass that failed in its fetch phase."""
    failing = _all_failing(config, exc)
    with contextlib.suppress(TransientError), locked(config.state_dir, LOCK_TIMEOUT):
        record_outcome(config, exc, failing, trigger, pass_duration(started))


def _all_failing(config: Config, exc: Exception) -> tuple[UrlState, ...] | None:
    """Each URL failing, when no URL offered a tip (``fetch_failure``: the
    message names each); None for any other failure of the fetch phase."""
    from syncd.errors import ConfigError, FetchError, SignatureError
    from syncd.git.urls import redact_url

    if not isinstance(exc, FetchError | SignatureError | ConfigError):
        return None
    message = outcome(exc).message
    return tuple(UrlState(redact_url(url), None, FAILING, message) for url in config.repo.urls)


def pass_duration(started: float) -> float:
    """Seconds since ``started`` (``time.monotonic``), to the millisecond."""
    return round(time.monotonic() - started, 3)


def _fetch(config: Config, cancel: Callable[[], bool] | None, progress: bool = False) -> Fetched:
    """The fetch phase: the tip each URL advertises, its signature verified
    (in git's own encoding) before anything else is read, and complete in
    the store (``GitStore.fetch``)."""
    from syncd.git.store import FETCHED_REF, GitStore
    from syncd.signing.commits import signing_key

    with locked(config.state_dir, LOCK_TIMEOUT, FETCH_LOCK_FILE):
        store = GitStore(config.state_dir / "repo.git", writes=FETCHED_REF)
        try:
            limits = fetch_limits(config, progress)
            offers = store.fetch(config.repo.urls, config.repo.branch, limits, signing_key, cancel)
        finally:
            store.close()
    return Fetched(tuple((o.url, o.tip, o.error) for o in offers))


def _probe(config: Config, cancel: Callable[[], bool] | None) -> list[Offered] | None:
    """Each URL's offer from its refs request alone (``git.probe``: no
    dulwich, no child process), when the pass may change nothing: every
    URL answered (a tip, or a timeout, in the fetch's own words) and each
    tip is the store's applied commit or one the last pass settled against
    it.  None otherwise: the fetch path asks again.  Raises the fetch's
    own ``fetch_failure`` when every URL timed out."""
    from syncd.git.failures import fetch_failure
    from syncd.git.probe import advertised
    from syncd.git.refnames import APPLIED_REF_NAME
    from syncd.git.urls import redact_url

    repo = config.repo
    answers = advertised(repo.urls, repo.branch, repo.timeout, repo.ca_file, repo.ssh_command, cancel)
    offers: list[Offered] = []
    for url, answer in zip(repo.urls, answers, strict=True):
        if isinstance(answer, str):
            offers.append((redact_url(url), answer, None))
        elif isinstance(answer, FetchTimeoutError):
            offers.append((redact_url(url), None, answer))
        else:
            return None
    if all(tip is None for _, tip, _ in offers):
        raise fetch_failure([error for _, _, error in offers if error is not None], repo.branch)
    applied = loose_ref(config.state_dir / "repo.git", APPLIED_REF_NAME)
    settled = {u.get("tip") for u in load_health(config.state_dir).urls if u.get("state") in (BEHIND, FORKED)}
    tips = {tip for _, tip, _ in offers if tip is not None}
    return offers if applied in tips and tips <= {applied, *settled} else None


def _unchanged_pass(
    config: Config,
    offers: list[Offered],
    parse_cache: ParseCache | None,
    hosts: InstalledHosts | None,
    trigger: Trigger | None,
    on_applied: Callable[[str], None] | None,
    started: float,
) -> SyncResult | None:
    """The apply phase of a pass whose URLs offer nothing new (``_probe``),
    without opening the store (``sync.noop``: why it is exact); recorded
    like any pass.  None when the pass turns out to need more (drift to
    read, a tip to compare): nothing was written, the caller runs it whole."""
    urls: list[tuple[UrlState, ...]] = []
    with locked(config.state_dir, LOCK_TIMEOUT):
        states = StateDir(config.state_dir)
        state = states.load()
        applied, committed = state.last_applied, state.commit_time
        store = config.state_dir / "repo.git"
        if applied is None or committed is None or not store_refs_agree(store, applied, [t for _, t, _ in offers]):
            return None
        repo = AppliedOnly(applied, committed)
        ports = Ports(
            repo=repo,
            hosts=hosts or HostsDir(config.tinc.hosts_dir),
            state=LoadedOnce(states, state),
            index=ParseIndexFile(config.state_dir),
            authority=NoAuthority(),
            pin_applied=lambda _: None,
            own_keys=lambda: _own_keys(config),
            reload=lambda: _reload(config, applied, on_applied),
        )

        def run(tip: str, url: str) -> SyncResult:
            return run_pass(ports, _settings(config), tip, url, parse_cache=parse_cache)

        def previous() -> list[UrlState]:
            return [UrlState.from_json(u) for u in load_health(config.state_dir).urls]

        try:
            load_signers(config)  # a broken allowed_signers fails every pass alike
            result = apply_newest(repo, lambda: applied, offers, run, urls.append, previous)
        except NotUnchanged:
            return None
        except Exception as exc:
            record_outcome(config, exc, urls[-1] if urls else None, trigger, pass_duration(started))
            raise
        result = replace(result, duration_s=pass_duration(started))
        record_outcome(config, result, result.urls or None, trigger, result.duration_s)
        return result


def _settings(config: Config) -> Settings:
    return Settings(
        node=config.node,
        branch=config.repo.branch,
        verify_all=config.trust.verify == "all",
        max_clock_skew=config.trust.max_clock_skew,
        tinc_dir=config.tinc.dir,
        rewind_command=config.command("sync --allow-rewind"),
    )


def _sync(
    config: Config,
    signers: list[AllowedSigner],
    fetched: Fetched | None,
    *,
    dry_run: bool,
    allow_rewind: bool,
    parse_cache: ParseCache | None = None,
    hosts: InstalledHosts | None = None,
    on_states: Callable[[tuple[UrlState, ...]], None] = lambda _: None,
    on_applied: Callable[[str], None] | None = None,
) -> SyncResult:
    """The apply phase (under the network's lock): ``pipeline.run_pass``
    with the real ports, on the newest offered tip that passes
    (``mirrors.apply_newest``)."""
    states = StateDir(config.state_dir)
    last = states.load().last_applied if fetched is None else None
    if fetched is None and last is None:  # drift repair of a node that never synced
        return SyncResult("unchanged", "", None, "(local store)", Plan())
    from syncd.git.store import APPLIED_REF, GitStore
    from syncd.sync.trust import RepoAuthority

    store = GitStore(config.state_dir / "repo.git", writes=APPLIED_REF)
    applying: list[str] = []  # the fetched tip run_pass is applying, for on_applied
    try:
        index = ParseIndexFile(config.state_dir)
        repo = store.repository
        owners = _IndexedOwners(index)
        authority = RepoAuthority(
            repo, signers, follow_repo=config.trust.follow_repo, owners_of=owners, sizes_of=owners.sizes
        )
        ports = Ports(
            repo=repo,
            hosts=hosts or HostsDir(config.tinc.hosts_dir),
            state=states,
            index=index,
            authority=authority,
            pin_applied=store.pin_applied,
            own_keys=lambda: _own_keys(config),
            reload=lambda: _reload(config, applying[-1] if applying else None, on_applied),
            applied_log=lambda: {entry.commit for entry in read_log(config.state_dir)},
        )
        settings = _settings(config)

        def run(tip: str, url: str) -> SyncResult:
            if fetched is not None:
                applying.append(tip)
            return run_pass(
                ports, settings, tip, url, dry_run=dry_run, allow_rewind=allow_rewind, parse_cache=parse_cache
            )

        if fetched is None:  # drift repair: the last applied commit, from the store
            assert last is not None
            return run(last, "(local store)")

        def previous() -> list[UrlState]:  # --allow-rewind checks every tip afresh
            return [] if allow_rewind else [UrlState.from_json(u) for u in load_health(config.state_dir).urls]

        return apply_newest(repo, lambda: states.load().last_applied, fetched.offers, run, on_states, previous)
    finally:
        store.close()


def _own_keys(config: Config) -> list[tuple[str, PublicKey]]:
    """The own-keys port: read only when a commit's host files are validated."""
    from syncd.node.privkeys import private_key_publics

    return private_key_publics(config.tinc.dir)


def _reload(config: Config, fetched: str | None, on_applied: Callable[[str], None] | None) -> Reloaded:
    """The reload port: the commit is installed and in the audit log; the state is saved after this."""
    from syncd.node.reload import reload_tinc

    if on_applied is not None and fetched is not None:
        on_applied(fetched)
    return reload_tinc(config.tinc, config.net)


def record_outcome(
    config: Config,
    result: SyncResult | Exception,
    urls: tuple[UrlState, ...] | None = None,
    trigger: Trigger | None = None,
    duration: float | None = None,
) -> None:
    """Record a pass in ``health.json`` and the metrics file, with each
    URL's offer (``urls``; None: as the last pass that fetched saw them),
    what started it (``trigger``) and how long it took (``duration``, seconds).
    The caller holds the network's lock (``state.locked``): two passes
    writing health at once could count a failure twice or lose one."""
    now = time.time()
    health = load_health(config.state_dir)
    if urls is not None:
        health = replace(health, urls=[u.to_json() for u in urls])
    if isinstance(result, SyncResult):
        health = replace(health, last_outcome=result.status, last_success_at=now, failures=0)
    else:
        failure = outcome(result)
        health = replace(
            health,
            last_outcome=failure.reason,
            last_error=failure.message,
            last_error_reason=failure.reason,
            last_error_at=now,
            failures=health.failures + 1,
        )
    quiet = trigger is not None and trigger.kind == "drift" and getattr(result, "status", "") == "unchanged"
    if trigger is not None and not quiet:  # a drift check after syncd's own writes is no pass worth showing
        health = trigger.recorded(health)
    health = replace(health, last_pass_at=now, last_pass_duration=duration)
    # Neither a full disk nor an unreadable state file may hide the pass's
    # own outcome, which the caller returns or raises next.
    with contextlib.suppress(OSError, SyncdError):
        save_health(config.state_dir, health)
    if config.metrics_file is not None:
        from syncd.node.metrics import write_metrics

        with contextlib.suppress(OSError, SyncdError):
            write_metrics(config.metrics_file, config.net, load_state(config.state_dir), health, config.trust.max_age)


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


def fetch_limits(config: Config, progress: bool = False) -> FetchLimits:
    from syncd.git.fetch import FetchLimits

    repo = config.repo
    return FetchLimits(repo.timeout, repo.max_fetch_bytes, repo.ssh_command, repo.ca_file, progress)


class _IndexedOwners:
    """The owner lines of a file the node validated before, by blob id (from
    the parse index, read when first asked: most passes never ask); and the
    sizes of those blobs."""

    def __init__(self, index: ParseIndexFile) -> None:
        self.index = index
        self.by_blob: dict[str, IndexRecord] | None = None

    def records(self) -> dict[str, IndexRecord]:
        if self.by_blob is None:
            self.by_blob = {b: record for (b, _, _), record in self.index.load().items()}
        return self.by_blob

    def __call__(self, blob: str) -> tuple[frozenset[bytes], dict[bytes, str]] | None:
        from syncd.node.parseindex import owners_of

        record = self.records().get(blob)
        return None if record is None else owners_of(record)

    def sizes(self) -> dict[str, int]:
        from syncd.node.parseindex import size_of

        return {blob: size_of(record) for blob, record in self.records().items()}
