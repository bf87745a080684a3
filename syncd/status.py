"""``syncd status``: what a node has installed and how its passes went.

Read-only: it takes no lock and touches neither the repository nor the
hosts directory (it reads and hashes the managed files to report drift,
regular files only, as a sync does: a FIFO there never blocks it).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path

from syncd.apply import TEMP_PREFIX, load_health, load_state, read_installed
from syncd.config import Config, redact_url
from syncd.hostfile import NAME_RE


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


def _other_entries(hosts: Path) -> list[str]:
    """Entries that are not host files: other names, and anything under a
    node's name that is not a regular file (a FIFO, a symlink, a directory),
    which syncd neither reads nor counts as installed."""
    others = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(hosts):
            if entry.name.startswith(TEMP_PREFIX):
                continue
            if not NAME_RE.match(entry.name) or not entry.is_file(follow_symlinks=False):
                others.append(entry.name)
    return sorted(others)


def node_status(config: Config) -> dict[str, object]:
    state = load_state(config.state_dir)
    health = load_health(config.state_dir)
    hosts = config.tinc.hosts_dir
    installed, _ = read_installed(hosts, state.manifest)
    drift = sorted(name for name, stat in state.manifest.items() if installed.get(name) != stat.sha256)
    unmanaged = sorted(name for name in installed if name not in state.manifest)
    others = _other_entries(hosts)
    return {
        "net": config.net,
        "node": config.node,
        "repository": redact_url(config.repo.url),
        "hosts_dir": str(hosts),
        "last_applied": None
        if state.last_applied is None
        else {
            "commit": state.last_applied,
            "signer": state.signer,
            "commit_time": _iso(state.commit_time),
            "applied_at": _iso(state.applied_at),
        },
        "files_managed": len(state.manifest),
        "drift": drift,
        "unmanaged": unmanaged,
        "other_entries": others,
        "reload_pending": state.reload_pending,
        "last_reload": _iso(state.last_reload),
        "reloads": state.reloads,
        "last_pass": {"at": _iso(health.last_pass_at), "outcome": health.last_outcome},
        "last_success": _iso(health.last_success_at),
        "last_error": None
        if health.last_error is None
        else {"at": _iso(health.last_error_at), "reason": health.last_error_reason, "message": health.last_error},
        "consecutive_failures": health.failures,
    }


def render_status(status: dict[str, object]) -> str:
    lines = [f"network {status['net']} (node {status['node']}), repository {status['repository']}"]
    applied = status["last_applied"]
    if isinstance(applied, dict):
        lines.append(
            f"applied:    {applied['commit']} signed by {applied['signer']}, committed {applied['commit_time']}, "
            f"installed {applied['applied_at']}"
        )
    else:
        lines.append("applied:    nothing yet")
    drift = status["drift"]
    lines.append(f"files:      {status['files_managed']} managed in {status['hosts_dir']}")
    lines.append(f"drift:      {', '.join(drift) if isinstance(drift, list) and drift else 'none'}")
    unmanaged = status["unmanaged"]
    if isinstance(unmanaged, list) and unmanaged:
        lines.append(f"unmanaged:  {', '.join(unmanaged)} (not in the repository, left alone)")
    others = status["other_entries"]
    if isinstance(others, list) and others:
        lines.append(f"ignored:    {', '.join(others)} (not host files)")
    reload = "pending" if status["reload_pending"] else f"last {status['last_reload'] or 'never'}"
    lines.append(f"reload:     {reload} ({status['reloads']} so far)")
    last = status["last_pass"]
    if isinstance(last, dict):
        lines.append(f"last pass:  {last['outcome'] or 'none'} at {last['at'] or '-'}")
    error = status["last_error"]
    if isinstance(error, dict):
        lines.append(
            f"last error: {error['at']} [{error['reason']}] {error['message']} "
            f"({status['consecutive_failures']} failures in a row now)"
        )
    return "\n".join(lines) + "\n"
