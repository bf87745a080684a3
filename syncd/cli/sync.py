"""``syncd sync``: one pass (``sync.agent.sync_once``) and what it says: the
summary and the plan with its diffs, or with ``--log`` the events ``syncd
run`` logs (one JSON object per line off a terminal, for the journal)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from syncd.errors import EXIT_OK, outcome
from syncd.findings import plural

if TYPE_CHECKING:
    from syncd.node.config import Config
    from syncd.node.reload import Reloaded


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``syncd sync``: one pass, its summary on ``out`` (or its events with ``--log``)."""
    from syncd.node.config import load_config
    from syncd.node.hostsdir import installed_reader
    from syncd.sync.agent import stale_warning, sync_once
    from syncd.tinc import learnedkey

    config = load_config(Path(args.config))
    if args.log:
        return _sync_logged(config, args, err)
    result = sync_once(config, dry_run=args.dry_run, allow_rewind=args.allow_rewind, progress=err.isatty())
    for warning in result.warnings:
        err.write(f"warning: {warning}\n")
    for name, key in result.learned.items():
        err.write(f"warning: {learnedkey.advice(name, key)}\n")
    stale = stale_warning(config, result, time.time())
    if stale is not None:
        err.write(f"warning: {stale}\n")
    plan = result.plan
    counts = f"{len(plan.add)} added, {len(plan.update)} updated, {len(plan.remove)} removed"
    head = f"{result.commit[:12]} signed by {result.signer}"
    if result.status == "planned":
        out.write(f"plan for {head} from {result.url}: {counts}\n")
        for line in plan.describe():
            out.write(f"  {line}\n")
        colour = out.isatty() and not os.environ.get("NO_COLOR")
        for diff in plan.diff(installed_reader(config.tinc.hosts_dir)):
            out.write("\n" + "".join(f"{_colour_diff(i, line) if colour else line}\n" for i, line in enumerate(diff)))
    elif result.status == "unchanged":
        out.write(f"already current at {head}\n")
        if result.reloaded is not None:
            out.write(f"  {describe_reload(result.reloaded)} (pending from an earlier pass)\n")
    else:
        if result.previous is None:
            history = "first sync"
        elif result.previous == result.commit:
            history = "re-applied"
        else:
            history = f"{plural(result.new_commits, 'new commit')} since {result.previous[:12]}"
        out.write(f"applied {head} ({history}): {counts}\n")
        for line in plan.describe():
            out.write(f"  {line}\n")
        if result.reloaded is not None:
            out.write(f"  {describe_reload(result.reloaded)}\n")
    return EXIT_OK


_DIFF_COLOURS = {"@": "\033[36m", "+": "\033[32m", "-": "\033[31m"}


def _colour_diff(index: int, line: str) -> str:
    """git's colours: bold file names (the first two lines), cyan hunk
    headers, green and red lines."""
    code = "\033[1m" if index < 2 else _DIFF_COLOURS.get(line[:1], "")
    return f"{code}{line}\033[m" if code else line


def _sync_logged(config: Config, args: argparse.Namespace, err: TextIO) -> int:
    """``sync --log``: structured events instead of the summary (for the
    systemd timer: one JSON object per line in the journal).  A failure is
    logged exactly as ``run`` logs it."""
    from syncd.cli.logsetup import get_logger, setup_logging
    from syncd.sync.agent import pass_duration, sync_once
    from syncd.sync.runloop import log_failure, log_result

    setup_logging(err)
    log = get_logger()
    started = time.monotonic()
    try:
        result = sync_once(config, dry_run=args.dry_run, allow_rewind=args.allow_rewind)
    except (Exception, KeyboardInterrupt) as exc:
        failed = outcome(exc)
        log_failure(log, config, failed, duration_s=pass_duration(started))
        return failed.exit_code
    if args.dry_run:
        log.info(
            "sync.planned",
            net=config.net,
            commit=result.commit,
            plan=result.plan.describe(),
            duration_s=result.duration_s,
        )
    else:
        log_result(log, config, result)
    return EXIT_OK


def describe_reload(reloaded: Reloaded) -> str:
    if reloaded.method == "none":
        return f"tincd not reloaded ({reloaded.detail})"
    return f"reloaded tincd ({reloaded.method}): {reloaded.detail}"
