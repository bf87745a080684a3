"""``syncd run``: the long-running agent around ``sync_once``.

The loop only decides *when* to run a pass; ``sync_once`` does the work.

* Every ``interval`` seconds, ± 10 % jitter (so that a fleet of nodes does
  not fetch in lockstep).
* After a failure ``errors.outcome`` calls worth retrying (transient: no URL
  reachable, reload failed; or an internal error) it retries sooner: 5 s,
  10 s, 20 s, ... capped at ``interval``.  A refused commit, a config error
  or a corrupt node key is not retried sooner: someone has to act first.
* SIGHUP: a pass now.  SIGTERM / SIGINT: finish the current pass, exit 0.
* inotify (``watchdog``) on ``tinc.dir/hosts``: when a managed file is
  modified or deleted behind syncd's back, the last verified commit is
  re-applied from the local store within a second (no fetch) and
  ``drift.repaired`` is logged.  syncd's own writes trigger a check too, which
  finds nothing to do.  The same watch spares a pass the stat of every
  installed file: it stats only the names the watch reported since the
  last pass, and all of them when the watch cannot vouch for the rest
  (``node.hostswatch`` says when, and why that is exact).
* A fetch pass runs in a worker thread: while it waits on a slow server
  (never longer than ``repo.timeout`` per URL), SIGTERM still stops the agent
  within seconds (the fetch is killed) and drift is still repaired.
* Notifications (docs/architecture.md, "Notifications"): a UDP datagram
  naming a commit on the agent's VPN address starts a fetch pass sooner —
  only when the commit is not the one applied, at most once per
  ``notify.min_gap``; the notifications that arrive meanwhile are coalesced
  into the next pass.  A pass that applies a new tip tells other agents.
* Under systemd: ``READY=1`` after the first pass, ``STATUS=`` after each,
  ``WATCHDOG=1`` at half of ``WatchdogSec`` while the agent makes progress
  (a pass past its deadline stops the heartbeat: systemd restarts the agent).
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from syncd.errors import EXIT_REFUSED, Outcome, outcome
from syncd.git.urls import redact_url
from syncd.node.config import Config
from syncd.node.notify import Notifier
from syncd.node.state import Trigger
from syncd.rules.validate import ParseCache
from syncd.sync.agent import pass_duration, stale_warning, sync_once
from syncd.sync.ears import Ears
from syncd.sync.ports import SyncResult
from syncd.tinc import learnedkey

if TYPE_CHECKING:
    from syncd.node.hostswatch import WatchedHosts

FIRST_RETRY = 5.0
JITTER = 0.10
DEBOUNCE = 0.1  # seconds: let a burst of file events settle
TICK = 1.0  # seconds: the main loop wakes at least this often
STOP_SECONDS = 5.0  # how long a stop waits for the fetch worker to end
PASS_SLACK = 120.0  # seconds a fetch pass may take beyond its fetch deadlines (verify, validate, apply)


@dataclass
class _Wake:
    sync: bool = False
    repair: bool = False
    stop: bool = False


class RunLoop:
    def __init__(self, config: Config, log: Any, notifier: Notifier | None = None) -> None:
        self.config = config
        self.log = log
        self.notifier = notifier or Notifier()
        self.cond = threading.Condition()
        self.wake = _Wake()
        self.failures = 0
        self.parse_cache = ParseCache()  # files parsed once per agent, the checks across files updated
        self.cancel = threading.Event()  # set on stop: a fetch in flight is killed
        self.worker: threading.Thread | None = None  # the fetch pass in flight
        self.done: float | None = None  # the worker's delay until the next fetch, once it ends
        self.progress = time.monotonic()  # the main loop's last tick
        self.fetch_started = 0.0
        self.ears = Ears(config, log, self.cond)
        self.hosts: WatchedHosts | None = None  # the watched hosts directory, once ``run`` starts

    # --- triggers (signal handlers, file events) -------------------------------------

    def request(self, *, sync: bool = False, repair: bool = False, stop: bool = False) -> None:
        with self.cond:
            self.wake.sync |= sync
            self.wake.repair |= repair
            self.wake.stop |= stop
            self.cond.notify_all()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.request(sync=True)
        else:
            self.request(stop=True)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.hosts = self._watch_hosts()
        heartbeat = self._start_heartbeat()
        self.log.info(
            "run.started",
            net=self.config.net,
            node=self.config.node,
            url=redact_url(self.config.repo.url),
            interval=self.config.interval,
        )
        self.ears.start()
        try:
            self._loop()
        finally:
            self.cancel.set()
            if self.worker is not None:
                self.worker.join(timeout=STOP_SECONDS)
            self.ears.stop()
            self.notifier.stopping()
            heartbeat.set()
            if self.hosts is not None:
                self.hosts.stop()
            self.log.info("run.stopped", net=self.config.net)
        return 0

    def _loop(self) -> None:
        """The main thread: it never blocks for longer than a tick.  A fetch
        pass runs in a worker thread (its fetch may wait on a slow server for
        ``repo.timeout`` per URL); stop requests and drift repairs are
        served meanwhile."""
        next_fetch = time.monotonic()
        ready = False
        while True:
            self.progress = time.monotonic()
            with self.cond:
                due = min(next_fetch, self.ears.due()) if self.worker is None else math.inf
                self.cond.wait_for(
                    lambda: (
                        self.wake.sync
                        or self.wake.repair
                        or self.wake.stop
                        or self.done is not None
                        or (self.worker is None and self.ears.ready())
                    ),
                    timeout=min(TICK, max(0.0, due - time.monotonic())),
                )
                wake, done = self.wake, self.done
                self.wake, self.done = _Wake(), None
            if wake.stop:
                return
            if done is not None:
                self.worker = None
                next_fetch = time.monotonic() + done
                if not ready:
                    ready = True
                    self.notifier.ready(self._status_line())
            if wake.repair:  # also while the first fetch is in flight: the store has the last applied commit
                time.sleep(DEBOUNCE)
                with self.cond:  # events that arrived meanwhile are covered by this pass
                    self.wake.repair = False
                self._pass(fetch=False, trigger=self.ears.trigger("drift"))  # the fetch schedule stays as it was
            if self.worker is None:
                trigger = self._fetch_trigger(wake, next_fetch, ready)
                if trigger is not None:
                    self._start_fetch(trigger)

    def _fetch_trigger(self, wake: _Wake, next_fetch: float, ready: bool) -> Trigger | None:
        """Why a fetch pass starts now (None: not now): SIGHUP, a
        notification past its gap, the poll timer (or a retry, or the start)."""
        if wake.sync:
            return self.ears.trigger("signal")
        heard = self.ears.take()
        if heard is not None:
            return heard
        if time.monotonic() >= next_fetch:
            return self.ears.trigger("start" if not ready else "retry" if self.failures else "poll")
        return None

    def _start_fetch(self, trigger: Trigger) -> None:
        def work() -> None:
            try:
                delay = self._pass(fetch=True, trigger=trigger)
            except KeyboardInterrupt:  # told to stop: the fetch was killed
                return
            with self.cond:
                self.done = delay
                self.cond.notify_all()

        self.fetch_started = time.monotonic()
        self.worker = threading.Thread(target=work, name="syncd-fetch", daemon=True)
        self.worker.start()

    def _pass(self, *, fetch: bool, trigger: Trigger | None = None) -> float:
        """One pass; returns the delay until the next fetch: soon (back-off)
        when ``outcome`` says retrying may help, else the jittered interval
        (a refused commit or a broken config waits for someone to act).
        A pass that applied a new tip tells other agents (``Ears.passed``)."""
        trigger = trigger or self.ears.trigger("poll")
        started = time.monotonic()
        try:
            result = sync_once(
                self.config,
                fetch=fetch,
                parse_cache=self.parse_cache,
                hosts=self.hosts,
                cancel=self.cancel.is_set,
                trigger=trigger,
                on_applied=lambda commit: self.ears.applied_now(commit, trigger),
            )
        except Exception as exc:  # a bug or a library surprise too: the agent stays up
            self.failures += 1
            failed = outcome(exc)
            log_failure(
                self.log,
                self.config,
                failed,
                failures=self.failures,
                duration_s=pass_duration(started),
                **_trigger_fields(trigger),
            )
            verdict = "refused" if failed.exit_code == EXIT_REFUSED else "failing"
            self.notifier.status(f"{verdict} ({failed.reason}): {failed.message[:200]}")
            return self._backoff() if failed.retry else self._jittered()
        self.failures = 0
        log_result(self.log, self.config, result, repair=not fetch, trigger=_trigger_fields(trigger))
        self.ears.passed(result, trigger)
        self.notifier.status(self._status_line(result))
        return self._jittered()

    def _backoff(self) -> float:
        return min(float(self.config.interval), FIRST_RETRY * 2.0 ** (self.failures - 1))

    def _jittered(self) -> float:
        return float(self.config.interval) * random.uniform(1 - JITTER, 1 + JITTER)

    def _status_line(self, result: SyncResult | None = None) -> str:
        if result is None or not result.commit:
            return "running"
        return f"{result.status} {result.commit[:12]} signed by {result.signer}"

    # --- helpers -------------------------------------------------------------------------------

    def _watch_hosts(self) -> WatchedHosts:
        """The hosts directory under a watch: an event on a valid node name
        asks for a repair pass, and a pass stats only what the watch
        reported (``node.hostswatch``)."""
        from syncd.node.hostswatch import WatchedHosts

        hosts = WatchedHosts(self.config.tinc.hosts_dir, on_change=lambda: self.request(repair=True))
        hosts.start()
        return hosts

    def _start_heartbeat(self) -> threading.Event:
        """WATCHDOG=1 from its own thread, so that a long pass does not make
        systemd think the agent hung — but only while the agent makes
        progress: the main loop ticked recently, and a fetch in flight is
        still within its deadline (``repo.timeout`` per URL, plus the apply).
        Past that something is stuck, and systemd should restart it."""
        done = threading.Event()
        interval = self.notifier.watchdog_interval
        if interval is not None:

            def beat() -> None:
                while not done.wait(interval):
                    if self.healthy():
                        self.notifier.watchdog()

            threading.Thread(target=beat, name="sd-watchdog", daemon=True).start()
        return done

    def healthy(self) -> bool:
        now = time.monotonic()
        if now - self.progress > max(3 * TICK, (self.notifier.watchdog_interval or 0.0)):
            return False  # the main loop is stuck (e.g. in a repair pass that never ends)
        bound = self.config.repo.timeout * len(self.config.repo.urls) + PASS_SLACK
        return self.worker is None or now - self.fetch_started < bound


def log_failure(log: Any, config: Config, failed: Outcome, **fields: object) -> None:
    """The event of a failed pass, at the level ``outcome`` gives it (shared
    by ``sync --log`` and ``run``, so both say the same of the same failure)."""
    if failed.hint is not None:
        fields["hint"] = failed.hint
    getattr(log, failed.level)(failed.event, net=config.net, reason=failed.reason, error=failed.message, **fields)


def _trigger_fields(trigger: Trigger) -> dict[str, object]:
    return {"trigger": trigger.kind} if trigger.by is None else {"trigger": trigger.kind, "by": trigger.by}


def log_result(
    log: Any, config: Config, result: SyncResult, *, repair: bool = False, trigger: dict[str, object] | None = None
) -> None:
    """The events of one successful pass (shared by ``sync`` and ``run``;
    ``run`` says what started it)."""
    plan = result.plan
    fields = {
        **(trigger or {}),
        "net": config.net,
        "commit": result.commit,
        "signer": result.signer,
        "added": len(plan.add),
        "updated": len(plan.update),
        "removed": len(plan.remove),
        "duration_s": result.duration_s,
    }
    if result.status == "applied":
        if repair or result.previous == result.commit:
            log.warning("drift.repaired", **fields, files=list(plan.writes + plan.remove))
        else:
            log.info("sync.applied", **fields, new_commits=result.new_commits, url=redact_url(result.url))
    elif result.status == "unchanged" and not repair:
        log.info(
            "sync.unchanged", **(trigger or {}), net=config.net, commit=result.commit, duration_s=result.duration_s
        )
    for warning in result.warnings:
        log.warning("check.warning", net=config.net, finding=warning)
    for name, key in result.learned.items():
        log.warning(
            "tinc.key_learned",
            net=config.net,
            node=name,
            line=learnedkey.line(key),
            message=learnedkey.advice(name, key),
        )
    stale = stale_warning(config, result, time.time())
    if stale is not None:
        log.warning("sync.stale", net=config.net, commit=result.commit, age=result.tip_age(time.time()), error=stale)
    if result.reloaded is not None and result.reloaded.method != "none":
        log.info("reload.done", net=config.net, method=result.reloaded.method, detail=result.reloaded.detail)
