"""``syncd status``: what a node has installed, how its passes went, and
whether it is healthy (a monitoring check: exit 0 healthy, 1 not).

Read-only: it takes no lock and touches neither the repository nor the
hosts directory (it reads and hashes the managed files to report drift,
regular files only, as a sync does: a FIFO there never blocks it).
Its advice is a command to paste, never "remove the state": ``state.json``
holds the rollback anchor, the one thing a node must not forget.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from pathlib import Path

from syncd.errors import REFUSALS, Reason, StateError
from syncd.git.urls import redact_url
from syncd.node.config import Config
from syncd.node.files import TEMP_PREFIX
from syncd.node.hostsdir import appended_since, read_installed
from syncd.node.metrics import staleness
from syncd.node.state import Health, State, load_health, load_state
from syncd.rules.units import format_duration, format_size
from syncd.tinc import learnedkey
from syncd.tinc.names import is_node_name

ADMIN_EXPIRY_NOTICE = 30 * 86400  # seconds: warn when the last valid admin key expires within this

SUCCESS_OUTCOMES = frozenset({"applied", "unchanged"})


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
            if not is_node_name(entry.name) or not entry.is_file(follow_symlinks=False):
                others.append(entry.name)
    return sorted(others)


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def node_status(config: Config, now: float | None = None) -> dict[str, object]:
    now = time.time() if now is None else now
    try:
        state = load_state(config.state_dir)
    except StateError as exc:
        # load_state's own advice is to move the file away: from a health
        # check that would cost the node its rollback anchor
        raise StateError(
            exc.message.partition("; move it away")[0],
            hint=f"state.json holds the last applied commit (the rollback anchor): keep it; restore it from a "
            f"backup or repair the JSON, then run: {config.command('status')}",
        ) from None
    health = load_health(config.state_dir)
    hosts = config.tinc.hosts_dir
    installed, _ = read_installed(hosts, state.manifest)
    drift, learned = _drift(hosts, state, installed)
    unmanaged = sorted(name for name in installed if name not in state.manifest)
    others = _other_entries(hosts)
    problems, advice = health_problems(config, state, health, now)
    return {
        "net": config.net,
        "node": config.node,
        "repository": redact_url(config.repo.url),
        "hosts_dir": str(hosts),
        "healthy": not problems,
        "problems": problems,
        "warnings": [
            *health_warnings(state, now),
            *own_file_stale(config, state, now),
            *url_warnings(health),
        ],
        "advice": advice,
        "last_applied": None
        if state.last_applied is None
        else {
            "commit": state.last_applied,
            "signer": state.signer,
            "commit_time": _iso(state.commit_time),
            "applied_at": _iso(state.applied_at),
        },
        "tip_age_seconds": staleness(state.commit_time, config.trust.max_age, now)[0],
        "files_managed": len(state.manifest),
        "drift": drift,
        "learned_keys": {name: learnedkey.line(key) for name, key in sorted(learned.items())},
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
        "urls": health.urls,
    }


def _drift(hosts: Path, state: State, installed: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The managed files that differ from what syncd installed, and those
    that differ only by the Ed25519 key tincd appended (``learnedkey``):
    recorded by the last pass, or appended since (read again)."""
    drift: list[str] = []
    learned: dict[str, str] = {}
    for name, known in sorted(state.manifest.items()):
        if installed.get(name) == known.blob:
            if known.learned:
                learned[name] = known.learned
            continue
        key = appended_since(hosts, name, known) if name in installed else None
        if key is None:
            drift.append(name)
        else:
            learned[name] = key
    return drift, learned


def health_problems(config: Config, state: State, health: Health, now: float) -> tuple[list[str], list[str]]:
    """Why the node is not healthy (one line each), and the commands to
    paste that would show more or fix it; both empty when healthy."""
    problems: list[str] = []
    advice: list[str] = []
    if state.last_applied is None:
        problems.append("never synced")
        advice.append(config.command("sync"))
    outcome = health.last_outcome
    if outcome is not None and outcome not in SUCCESS_OUTCOMES:
        reason = health.last_error_reason or outcome
        verdict = "refused" if reason in REFUSALS else "failed"
        message = _first_line(health.last_error or "")
        at = _iso(health.last_error_at or health.last_pass_at)
        problems.append(f"last pass {verdict} [{reason}] at {at}: {message}")
        if reason == Reason.NON_FAST_FORWARD:
            advice.append(f"{config.command('sync --dry-run --allow-rewind')}  (only if an admin rewrote the history)")
        else:
            advice.append(config.command("sync --dry-run"))
    if state.reload_pending:
        problems.append("reload pending: tincd has not taken the installed host files yet")
        advice.append(config.command("sync"))
    if state.held_back is not None:
        problems.append(f"own host file held back [{state.held_back.replace(': ', ']: ', 1)}")
        advice.append(config.command("sync"))
    needed = state.max_blob_bytes
    if needed is not None and config.repo.max_fetch_bytes < needed:
        problems.append(
            f"repo.max_fetch_bytes ({format_size(config.repo.max_fetch_bytes)}) is lower than the repository "
            f"needs: its policy lets a commit carry a blob of up to {format_size(needed)} (max_blob_bytes), which "
            f"this node could not fetch; set repo.max_fetch_bytes in {config.source} to at least {format_size(needed)}"
        )
    age, stale = staleness(state.commit_time, config.trust.max_age, now)
    if stale and age is not None and config.trust.max_age is not None:
        problems.append(
            f"stale: the applied commit was committed {format_duration(age)} ago, "
            f"more than trust.max_age ({format_duration(config.trust.max_age)}): "
            "an admin must push a new signed commit, or the node cannot reach it"
        )
        advice.append(config.command("sync --dry-run"))
    return problems, list(dict.fromkeys(advice))


def health_warnings(state: State, now: float) -> list[str]:
    """What does not make the node unhealthy yet but soon will."""
    warnings = []
    until = state.admins_until
    if until is not None and until - now < ADMIN_EXPIRY_NOTICE:
        when = "expired" if until < now else f"expires in {format_duration(until - now)}"
        warnings.append(
            f"the last admin key valid at the applied commit {when} ({_iso(until)}): after that no admin can sign "
            "a commit; an admin must commit a new allowed_signers (or a later valid-before) before then"
        )
    return warnings


def own_file_stale(config: Config, state: State, now: float) -> list[str]:
    """The node's own host file, when the applied commit's policy has
    ``stale_after`` and the file had no signed change for that long: its
    owners must renew it before an admin removes the node.  Read from the
    store, which a pass only ever adds to."""
    from syncd.errors import SyncdError
    from syncd.git.repository import GitRepository
    from syncd.node.state import STORE_DIR
    from syncd.rules.owners import parse_owners
    from syncd.rules.policy import policy_of
    from syncd.rules.stale import is_stale, stale_message
    from syncd.sync.lastchange import last_changes

    store = config.state_dir / STORE_DIR
    if state.last_applied is None or not (store / "objects").is_dir():
        return []
    repo = GitRepository.reading(store)
    try:
        policy, _ = policy_of(repo.policy_bytes(state.last_applied))
        if policy.stale_after is None:
            return []
        history = last_changes(repo, state.last_applied, policy.hosts_dir, None)
        path = f"{policy.hosts_dir}/{config.node}"
        data = repo.file_at(state.last_applied, path, policy.max_file_bytes)
    except SyncdError:
        return []  # the next pass repairs the store and says so
    finally:
        repo.close()
    change = history.changes.get(config.node)
    when = change.when if change is not None else None
    if data is None or not is_stale(when, policy.stale_after, now):
        return []
    owners = tuple((o.key, o.comment) for o in parse_owners(path, data).owners)
    return [f"this node's own host file {path} is {stale_message(when, policy.stale_after, now, owners)}"]


def url_warnings(health: Health) -> list[str]:
    """A URL that lags, serves another line of history or fails: the node
    may still be current through another one, but an operator should know."""
    said = {
        "behind": "serves an older commit than the applied one (a lagging or frozen mirror)",
        "forked": "serves a commit of another line of history (a stale branch, or a hostile server)",
        "ahead": "serves a newer commit that was not applied",
        "failing": "offered no tip",
    }
    warnings = []
    for url in health.urls:
        state = str(url.get("state"))
        if state in said:
            tip = url.get("tip")
            detail = _first_line(str(url.get("detail") or ""))
            text = f"{url.get('url')} {said[state]}" + (f" ({tip[:12]})" if tip else "")
            warnings.append(text + (f": {detail}" if detail else ""))
    return warnings


def verdict_line(status: dict[str, object]) -> str:
    """The first line: the verdict for a monitoring check (Nagios plugin
    style: ``SERVICE STATE: text | perfdata``)."""
    name = f"syncd {status['net']}"
    problems = status["problems"]
    if isinstance(problems, list) and problems:
        # " -- " between problems: their messages hold "; " and "/" themselves
        text = f"{name} NOT HEALTHY: {' -- '.join(str(p) for p in problems)}"
    else:
        applied = status["last_applied"]
        commit = applied if isinstance(applied, dict) else {}  # healthy: a commit is applied
        text = f"{name} OK: {str(commit.get('commit'))[:12]} signed by {commit.get('signer')}, "
        text += f"committed {commit.get('commit_time')}"
    drift = status["drift"]
    perf = [f"failures={status['consecutive_failures']}", f"drift={len(drift) if isinstance(drift, list) else 0}"]
    age = status["tip_age_seconds"]
    if isinstance(age, float | int):
        perf.insert(0, f"tip_age={age:.0f}s")
    # "|" starts the performance data: never inside the text
    return f"{text.replace('|', '/')} | {' '.join(perf)}"


def _pass_outcome(outcome: object) -> str:
    """``applied``, ``unchanged``; ``refused [signature]``, ``failed [fetch-timeout]``."""
    if outcome in SUCCESS_OUTCOMES or outcome is None:
        return str(outcome)
    return f"{'refused' if outcome in REFUSALS else 'failed'} [{outcome}]"


def _in_a_row(failures: object) -> str:
    return "1 failure so far" if failures == 1 else f"{failures} failures in a row now"


def render_status(status: dict[str, object]) -> str:
    lines = [verdict_line(status)]
    lines.append(f"network {status['net']} (node {status['node']}), repository {status['repository']}")
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
    learned = status["learned_keys"]
    if isinstance(learned, dict):
        for name, key_line in learned.items():
            lines.append(
                f"learned:    {name}: tincd appended its Ed25519 key (kept, not drift); "
                f"add to its host file in the repository: {key_line}"
            )
    unmanaged = status["unmanaged"]
    if isinstance(unmanaged, list) and unmanaged:
        lines.append(f"unmanaged:  {', '.join(unmanaged)} (not in the repository, left alone)")
    others = status["other_entries"]
    if isinstance(others, list) and others:
        lines.append(f"ignored:    {', '.join(others)} (not host files)")
    urls = status.get("urls")
    for url in urls if isinstance(urls, list) else []:
        tip = str(url.get("tip") or "")[:12] or "-"
        lines.append(f"url:        {url.get('url')} {url.get('state')} {tip}")
    reload = "pending" if status["reload_pending"] else f"last {status['last_reload'] or 'never'}"
    lines.append(f"reload:     {reload} ({status['reloads']} so far)")
    last = status["last_pass"]
    if isinstance(last, dict):
        at = last["at"]
        lines.append(f"last pass:  {_pass_outcome(last['outcome'])} at {at}" if at else "last pass:  never synced")
    error = status["last_error"]
    if isinstance(error, dict):
        # a content refusal: its summary, then one finding a line
        first, *details = str(error["message"]).split("\n")
        lines.append(
            f"last error: {error['at']} [{error['reason']}] {first} ({_in_a_row(status['consecutive_failures'])})"
        )
        lines += [f"            {detail}" for detail in details]
    warnings = status["warnings"]
    if isinstance(warnings, list):
        lines += [f"warning:    {warning}" for warning in warnings]
    advice = status["advice"]
    if isinstance(advice, list):
        lines += [f"  try: {command}" for command in advice]
    return "\n".join(lines) + "\n"
