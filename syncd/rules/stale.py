"""Stale nodes (pure): host files nobody has renewed with a signed change
for the policy's ``stale_after``.

Dead hosts pile up in every long-lived tinc network.  syncd removes
nothing: it names each stale node, its owners and the date of its last
signed change, so that an owner renews it (any signed edit of the file) or
an admin removes it.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping

from syncd.findings import Finding, warning
from syncd.rules.units import format_duration
from syncd.signing.sshsig import fingerprint
from syncd.tinc.hostfile import HostFile

CODE = "node-stale"


def is_stale(last_signed: int | None, stale_after: float, now: float) -> bool:
    """No signed change (None), or the last one more than ``stale_after`` ago."""
    return last_signed is None or now - last_signed > stale_after


def day(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d")


def owners_text(host: HostFile) -> str:
    """``owners: alice@laptop (SHA256:...)``: each owner line's comment and key."""
    if not host.owners:
        return "no owners (only an admin can renew it)"
    return "owners: " + ", ".join(f"{comment or '(no comment)'} ({fingerprint(key)})" for key, comment in host.owners)


def stale_findings(
    hosts: Mapping[str, HostFile],
    hosts_dir: str,
    last_signed: Mapping[str, int],
    at_tip: Collection[str],
    stale_after: float,
    now: float,
) -> list[Finding]:
    """A warning for each node of ``hosts`` that the history's tip has
    (``at_tip``; a file not committed yet is new, not stale) and whose last
    signed change (``last_signed``: name → committer time) is older than
    ``stale_after``, or that never had one."""
    findings = []
    limit = format_duration(stale_after)
    for name in sorted(hosts):
        if name not in at_tip or not is_stale(last_signed.get(name), stale_after, now):
            continue
        when = last_signed.get(name)
        since = (
            "no signed change in the history"
            if when is None
            else f"no signed change since {day(when)} ({format_duration(now - when)} ago)"
        )
        message = (
            f"stale: {since}, more than stale_after ({limit}); {owners_text(hosts[name])}; "
            "renew it with any signed edit of the file, or remove the node"
        )
        findings.append(warning(f"{hosts_dir}/{name}", 1, CODE, message))
    return findings
