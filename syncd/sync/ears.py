"""What ``syncd run`` does with notifications: listen, coalesce, tell others.

* Heard: a notification for this network naming a commit other than the
  one applied becomes the one pending notification (a newer one replaces
  it; nothing is kept per sender).  The run loop takes it at most once per
  ``notify.min_gap`` and runs a fetch pass — the pass trusts nothing the
  notification said.  A flood of any size is one pass per gap and constant
  memory.
* Told: a pass that applied a new tip tells the agents ``gossip.recipients``
  picks (its children in the commit's two trees, rooted at the node that
  learned of the tip from outside).  A tip merely heard of, or refused, is
  never passed on.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from syncd.errors import SyncdError
from syncd.node.config import Config
from syncd.node.state import Trigger, load_state
from syncd.sync.gossip import Notice, agent_address, directory, recipients, targets
from syncd.sync.listener import Listener, send
from syncd.sync.ports import SyncResult
from syncd.sync.webhook import Webhook, read_secret


@dataclass(frozen=True, slots=True)
class Heard:
    notice: Notice
    address: str  # where the datagram came from
    at: float  # wall clock


class Ears:
    """The notification side of one agent.  ``cond`` is the run loop's
    condition: the loop waits on it, and ``hear`` wakes it."""

    def __init__(self, config: Config, log: Any, cond: threading.Condition) -> None:
        self.config = config
        self.log = log
        self.cond = cond
        self.applied: str | None = None
        self.pending: Heard | None = None
        self.last: Heard | None = None
        self.heard = 0  # notifications for a commit not applied since the last notified pass
        self.gap_until = 0.0  # monotonic: no notified pass before this
        self.listener: Listener | None = None
        self.webhook: Webhook | None = None
        self.sent = 0  # notifications this agent sent
        self.told: str | None = None  # the last commit this agent told others of

    # --- listening --------------------------------------------------------------------------

    def start(self) -> None:
        with contextlib.suppress(OSError, SyncdError):
            self.applied = load_state(self.config.state_dir).last_applied
        self._listen()
        self._webhook()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        if self.webhook is not None:
            self.webhook.stop()
            self.webhook = None

    def _webhook(self) -> None:
        notify, net = self.config.notify, self.config.net
        if notify.webhook is None:
            return
        try:
            secret = read_secret(notify.webhook_secret_file)
            self.webhook = Webhook(notify.webhook, net, self.config.repo.branch, self.hear, secret)
        except OSError as exc:
            where = f"{notify.webhook[0]} port {notify.webhook[1]}"
            self.log.warning("notify.webhook_off", net=net, reason=f"cannot serve the webhook on {where}: {exc}")
            return
        self.webhook.start()
        self.log.info("notify.webhook", net=net, on=self.webhook.bound, secret=notify.webhook_secret_file is not None)

    def _listen(self) -> None:
        notify = self.config.notify
        addresses = notify.listen
        if addresses is None:
            own = self.config.tinc.hosts_dir / self.config.node
            try:
                address = agent_address(own.read_bytes()[:65536])
            except OSError:
                address = None
            if address is None:
                self.log.info(
                    "notify.off",
                    net=self.config.net,
                    reason=f"{own} (not installed yet?) has no Subnet and no '# syncd-notify:' line: "
                    "no address to listen on; polling only",
                )
                return
            addresses = (address,)
        if not addresses:
            return
        try:
            self.listener = Listener(addresses, notify.port, self.hear)
        except OSError as exc:
            self.log.warning(
                "notify.off", net=self.config.net, reason=f"cannot listen on {', '.join(addresses)}: {exc.strerror}"
            )
            return
        self.listener.start()
        self.log.info("notify.listening", net=self.config.net, on=self.listener.bound)

    def hear(self, notice: Notice, address: str) -> None:
        """A notification arrived (the listener's thread)."""
        if notice.net != self.config.net:
            return
        heard = Heard(notice, address, time.time())
        with self.cond:
            self.last = heard
            if notice.commit == self.applied:
                return
            first = self.pending is None
            self.pending = heard
            self.heard += 1
            if first:
                self.cond.notify_all()

    # --- the run loop's side (``due`` and ``ready`` with the condition held) ----------------

    def due(self) -> float:
        return self.gap_until if self.pending is not None else math.inf

    def ready(self) -> bool:
        return self.pending is not None and time.monotonic() >= self.gap_until

    def take(self) -> Trigger | None:
        """The pending notification as a pass's trigger, once its gap is over."""
        with self.cond:
            if not self.ready() or self.pending is None:
                return None
            heard, count = self.pending, self.heard
            self.pending, self.heard = None, 0
            self.gap_until = time.monotonic() + self.config.notify.min_gap
        notice = heard.notice
        self.log.info(
            "notify.heard", net=self.config.net, commit=notice.commit, by=notice.by, address=heard.address, heard=count
        )
        return Trigger("notify", notice.by, heard.at, notice.by, notice.origin or None)

    def trigger(self, kind: str) -> Trigger:
        last = self.last
        return Trigger(kind, None, last.at if last else None, last.notice.by if last else None)

    def applied_now(self, commit: str, trigger: Trigger) -> None:
        """A fetched commit is installed and recorded; tincd's reload is
        next.  A new tip is passed on now, not a second later."""
        with self.cond:
            new = commit != self.applied
            self.applied = commit
            if self.pending is not None and self.pending.notice.commit == commit:
                self.pending, self.heard = None, 0
        if new:
            self.tell(commit, trigger.origin or self.config.node)

    def passed(self, result: SyncResult, trigger: Trigger) -> None:
        """After a successful pass: what is applied now; tell others of a new
        tip (unless ``applied_now`` did)."""
        with self.cond:
            if result.commit and result.status in ("applied", "unchanged"):
                self.applied = result.commit
            if self.pending is not None and self.pending.notice.commit == self.applied:
                self.pending, self.heard = None, 0
        if self.listener is None and self.config.notify.listen is None and result.status == "applied":
            self._listen()  # the node's own host file may have just been installed
        new = result.status == "applied" and bool(result.commit) and result.commit != result.previous
        if new and trigger.kind != "drift":
            self.tell(result.commit, trigger.origin or self.config.node)

    def tell(self, commit: str, origin: str) -> None:
        """Tell this node's children in the commit's trees rooted at ``origin``, once per commit."""
        if commit == self.told:
            return
        self.told = commit
        notify = self.config.notify
        addresses = directory(self.config.tinc.hosts_dir)
        names = recipients(addresses, self.config.node, commit, notify.fanout, origin)
        if not names:
            return
        notice = Notice(self.config.net, commit, "node", self.config.node, origin)
        sent, problems = send(notice, targets(addresses, names, notify.port))
        self.sent += sent
        fields: dict[str, object] = {"net": self.config.net, "commit": commit, "to": names, "sent": sent}
        if problems:
            fields["problems"] = problems
        self.log.info("notify.sent", **fields)
