"""Stale nodes (pure): host files nobody has renewed with a signed change
for the policy's ``stale_after``.

Dead hosts pile up in every long-lived tinc network.  syncd removes
nothing: it names each stale node, its owners and the date of its last
signed change, so that an owner renews it (any signed edit of the file) or
an admin removes it.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping, Sequence

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


def owners_text(owners: Sequence[tuple[bytes, str]]) -> str:
    """``owners: alice@laptop (SHA256:...)``: each owner line's comment and
    key (``HostFile.owners``)."""
    if not owners:
        return "no owners (only an admin can renew it)"
    return "owners: " + ", ".join(f"{comment or '(no comment)'} ({fingerprint(key)})" for key, comment in owners)


def stale_message(last_signed: int | None, stale_after: float, now: float, owners: Sequence[tuple[bytes, str]]) -> str:
    """Why a node is stale, who can renew it, and how."""
    since = (
        "no signed change in the history"
        if last_signed is None
        else f"no signed change since {day(last_signed)} ({format_duration(now - last_signed)} ago)"
    )
    return (
        f"stale: {since}, more than stale_after ({format_duration(stale_after)}); {owners_text(owners)}; "
        "renew it with any signed edit of the file, or remove the node"
    )


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
    return [
        warning(
            f"{hosts_dir}/{name}", 1, CODE, stale_message(last_signed.get(name), stale_after, now, hosts[name].owners)
        )
        for name in sorted(hosts)
        if name in at_tip and is_stale(last_signed.get(name), stale_after, now)
    ]
