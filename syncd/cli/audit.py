"""The audit trail as people and programs read it (``syncd log``; pure).

Each line names a commit this node applied, when it was committed and
applied, who signed it (principal and key fingerprint), the role the signer
acted in (``admin``, ``owner:NAME``, ``join:NAME``; docs/trust.md) and the
paths it changed.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence

from syncd.node.state import Applied


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


def render_json(entries: Sequence[Applied]) -> str:
    """One JSON object per line, newest first: ``commit``, ``committed_at``,
    ``applied_at``, ``signer``, ``key``, ``role``, ``files`` (and ``summary``)."""
    lines = []
    for e in entries:
        doc = {
            "commit": e.commit,
            "committed_at": _iso(e.committed_at),
            "applied_at": _iso(e.applied_at),
            "signer": e.signer,
            "key": e.key,
            "role": e.role,
            "files": list(e.files),
            "summary": e.summary,
        }
        lines.append(json.dumps(doc) + "\n")
    return "".join(lines)


def render_text(entries: Sequence[Applied]) -> str:
    if not entries:
        return "nothing applied yet\n"
    out = []
    for e in entries:
        who = e.signer or "(not checked: trust.verify is tip)"
        role = f", {e.role}" if e.role else ""
        key = f", {e.key}" if e.key else ""
        out.append(f"{e.commit[:12]} {_iso(e.committed_at)} applied {_iso(e.applied_at)} by {who}{role}{key}\n")
        if e.summary:
            out.append(f"    {e.summary}\n")
        for path in e.files:
            out.append(f"    {path}\n")
    return "".join(out)
