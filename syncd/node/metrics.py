"""Prometheus text format for node_exporter's textfile collector.

Written atomically after each pass (``metrics_file`` in the node config,
e.g. ``/var/lib/node_exporter/textfile_collector/syncd_inet6.prom``)."""

from __future__ import annotations

import time
from pathlib import Path

from syncd.node.files import make_dirs, write_atomic
from syncd.node.state import Health, State

_METRICS = (
    ("syncd_last_success_timestamp_seconds", "gauge", "When the last pass succeeded (Unix time)."),
    ("syncd_last_pass_timestamp_seconds", "gauge", "When the last pass ended, successful or not (Unix time)."),
    ("syncd_pass_duration_seconds", "gauge", "How long the last pass took, successful or not (seconds)."),
    ("syncd_last_applied_commit_timestamp_seconds", "gauge", "Committer time of the last applied commit."),
    ("syncd_consecutive_failures", "gauge", "Passes that failed in a row (0 after a success)."),
    ("syncd_files_managed", "gauge", "Host files syncd installed and keeps in sync."),
    ("syncd_reloads_total", "counter", "tincd reloads since the state was created."),
    ("syncd_reload_pending", "gauge", "1 when host files changed but tincd has not been reloaded yet."),
    ("syncd_tip_age_seconds", "gauge", "Age of the last applied commit (committer time) when this file was written."),
    ("syncd_stale", "gauge", "1 when the last applied commit is older than trust.max_age."),
    ("syncd_last_notification_timestamp_seconds", "gauge", "When the agent last heard a notification (Unix time)."),
    (
        "syncd_learned_keys",
        "gauge",
        "Managed host files that tincd appended a learned Ed25519 key to (kept; the repository lacks it).",
    ),
)


def staleness(commit_time: float | None, max_age: float | None, now: float) -> tuple[float | None, bool]:
    """The applied commit's age, and whether that is more than ``max_age``
    (trust.max_age; None: no limit).  A commit from the future has age 0."""
    if commit_time is None:
        return None, False
    age = max(0.0, now - commit_time)
    return age, max_age is not None and age > max_age


def render(net: str, state: State, health: Health, max_age: float | None = None, now: float | None = None) -> str:
    age, stale = staleness(state.commit_time, max_age, time.time() if now is None else now)
    values = {
        "syncd_last_success_timestamp_seconds": health.last_success_at,
        "syncd_last_pass_timestamp_seconds": health.last_pass_at,
        "syncd_pass_duration_seconds": health.last_pass_duration,
        "syncd_last_applied_commit_timestamp_seconds": state.commit_time,
        "syncd_consecutive_failures": health.failures,
        "syncd_files_managed": len(state.manifest),
        "syncd_reloads_total": state.reloads,
        "syncd_reload_pending": int(state.reload_pending),
        "syncd_tip_age_seconds": None if age is None else round(age),
        "syncd_stale": None if age is None else int(stale),
        "syncd_learned_keys": sum(1 for f in state.manifest.values() if f.learned),
        "syncd_last_notification_timestamp_seconds": health.last_notification_at,
    }
    label = _label(net)
    lines = []
    for name, kind, help_text in _METRICS:
        value = values[name]
        if value is None:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f'{name}{{net="{label}"}} {value}']
    if health.last_trigger is not None:  # syncd run: what started the last pass
        name, trigger = "syncd_last_pass_trigger", health.last_trigger.replace("\\", "").replace('"', "")
        lines += [
            f"# HELP {name} What started the last pass (1 for its trigger: start, poll, retry, signal, drift, notify).",
            f"# TYPE {name} gauge",
            f'{name}{{net="{label}",trigger="{trigger}"}} 1',
        ]
    if health.urls:
        lines += [f"# HELP {_URL_METRIC} {_URL_HELP}", f"# TYPE {_URL_METRIC} gauge"]
        for url in health.urls:
            tip = (url.get("tip") or "")[:12]
            labels = f'net="{label}",url="{_label(url.get("url") or "")}",state="{_label(url.get("state") or "")}"'
            lines.append(f'{_URL_METRIC}{{{labels},tip="{tip}"}} 1')
    return "\n".join(lines) + "\n"


_URL_METRIC = "syncd_url_state"
_URL_HELP = (
    "Each URL of repo.url and repo.mirrors in the last pass that fetched: the tip it advertised and what that is "
    "to the applied commit (current, behind, ahead, forked, failing)."
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_metrics(path: Path, net: str, state: State, health: Health, max_age: float | None = None) -> None:
    make_dirs(path.parent)
    write_atomic(path, render(net, state, health, max_age).encode(), 0o644)
