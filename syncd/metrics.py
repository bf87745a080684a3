"""Prometheus text format for node_exporter's textfile collector.

Written atomically after each pass (``metrics_file`` in the node config,
e.g. ``/var/lib/node_exporter/textfile_collector/syncd_inet6.prom``)."""

from __future__ import annotations

from pathlib import Path

from syncd.apply import Health, State, write_atomic

_METRICS = (
    ("syncd_last_success_timestamp_seconds", "gauge", "When the last pass succeeded (Unix time)."),
    ("syncd_last_pass_timestamp_seconds", "gauge", "When the last pass ended, successful or not (Unix time)."),
    ("syncd_last_applied_commit_timestamp_seconds", "gauge", "Committer time of the last applied commit."),
    ("syncd_consecutive_failures", "gauge", "Passes that failed in a row (0 after a success)."),
    ("syncd_files_managed", "gauge", "Host files syncd installed and keeps in sync."),
    ("syncd_reloads_total", "counter", "tincd reloads since the state was created."),
    ("syncd_reload_pending", "gauge", "1 when host files changed but tincd has not been reloaded yet."),
)


def render(net: str, state: State, health: Health) -> str:
    values = {
        "syncd_last_success_timestamp_seconds": health.last_success_at,
        "syncd_last_pass_timestamp_seconds": health.last_pass_at,
        "syncd_last_applied_commit_timestamp_seconds": state.commit_time,
        "syncd_consecutive_failures": health.failures,
        "syncd_files_managed": len(state.manifest),
        "syncd_reloads_total": state.reloads,
        "syncd_reload_pending": int(state.reload_pending),
    }
    label = net.replace("\\", "\\\\").replace('"', '\\"')
    lines = []
    for name, kind, help_text in _METRICS:
        value = values[name]
        if value is None:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f'{name}{{net="{label}"}} {value}']
    return "\n".join(lines) + "\n"


def write_metrics(path: Path, net: str, state: State, health: Health) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render(net, state, health).encode(), 0o644)
