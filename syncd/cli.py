"""The command line: argparse, output formats, exit codes.  No logic lives
here; every failure is mapped once, by ``errors.outcome``, in ``main``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from syncd import __version__
from syncd.errors import EXIT_OK, EXIT_REFUSED, UsageError, outcome
from syncd.errors import EXIT_TRANSIENT as EXIT_TRANSIENT  # the exit codes, importable from here too
from syncd.errors import EXIT_USAGE as EXIT_USAGE
from syncd.findings import plural
from syncd.worktree import run_check

if TYPE_CHECKING:
    from typing import TypeAlias

    from syncd.config import Config
    from syncd.reload import Reloaded

    _Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep a tinc VPN's host files in sync from a signed git repository.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _check_parser(commands)
    _sync_parser(commands)
    _run_parser(commands)
    _status_parser(commands)
    _add_node_parser(commands)
    _completion_parser(commands)
    _log_parser(commands)
    return parser


def _check_parser(commands: _Commands) -> None:
    check = commands.add_parser(
        "check",
        help="validate a repository of tinc host files",
        description=(
            "Validate host files exactly as tincd reads them, and the network as a whole "
            "(names, subnets, keys) against the repository's syncd.yaml. "
            "Exit 0: clean; 1: findings; 2: usage error."
        ),
    )
    check.add_argument("repo", nargs="?", default=None, metavar="REPO", help="repository working tree (default: .)")
    check.add_argument(
        "--hosts-dir",
        metavar="DIR",
        help="check this directory of host files (e.g. /etc/tinc/NET/hosts); "
        "the policy comes from REPO/syncd.yaml when REPO is given, else the defaults",
    )
    check.add_argument("--format", choices=("text", "json", "github"), default="text", help="output format")
    check.add_argument("--strict", action="store_true", help="warnings fail the check too")
    check.set_defaults(handler=cmd_check)


def _sync_parser(commands: _Commands) -> None:
    sync = commands.add_parser(
        "sync",
        help="fetch, verify and install the host files once",
        description=(
            "One pass: fetch the repository, check that the new commits are signed by an allowed signer "
            "and descend from the last applied one, validate the tree as `syncd check` does, and install "
            "the host files that changed. Exit 0: applied or already current; 1: refused (nothing "
            "changed); 2: config error; 3: transient failure (retry later)."
        ),
    )
    _config_option(sync)
    sync.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sync.add_argument(
        "--allow-rewind",
        action="store_true",
        help="accept a tip that does not descend from the last applied commit (after an admin rewrote history)",
    )
    sync.add_argument(
        "--log",
        action="store_true",
        help="log events (one JSON object per line off a terminal, for the journal) instead of the summary",
    )
    sync.set_defaults(handler=cmd_sync)


def _run_parser(commands: _Commands) -> None:
    run = commands.add_parser(
        "run",
        help="the agent: sync every interval, repair drift, reload tincd",
        description=(
            "Run until SIGTERM: a sync every `interval` seconds (+/-10% jitter, sooner after a transient "
            "failure), at once on SIGHUP, and a re-apply of the last verified commit within a second when a "
            "managed host file is changed or deleted. Logs one JSON object per line off a terminal. "
            "Supports systemd Type=notify and WatchdogSec."
        ),
    )
    _config_option(run)
    run.set_defaults(handler=cmd_run)


def _status_parser(commands: _Commands) -> None:
    status = commands.add_parser(
        "status",
        help="what is installed, from which commit, and whether the node is healthy",
        description=(
            "Show the last applied commit, its signer, the managed files, drift and the last error. "
            "Usable as a Nagios-style monitoring check: the first line is the verdict "
            "('syncd NET OK: ...' or 'syncd NET NOT HEALTHY: reason -- reason', then '| perfdata'). "
            "Exit 0: healthy; 1: not healthy (never synced, last pass refused or failed, reload pending, "
            "or stale: the applied commit is older than trust.max_age); 2: config error."
        ),
    )
    _config_option(status)
    status.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    status.set_defaults(handler=cmd_status)


def _add_node_parser(commands: _Commands) -> None:
    add = commands.add_parser(
        "add-node",
        help="create a new node: keys, a free subnet, host file, tinc.conf, tinc-up/down",
        description=(
            "Set up a new tinc node the way the classic guide does by hand, checked against the hosts "
            "repository: a unique name, the next free subnet of the policy, a key pair tincd reads, the "
            "node's tinc directory, and its host file in the repository (to commit, signed, and push), "
            "naming its owners' SSH keys on '# syncd-owner:' lines. "
            "Exit 1 (nothing written) when the name, subnet or existing keys are a problem."
        ),
    )
    add.add_argument("name", metavar="NAME", help="the new node's tinc Name")
    add.add_argument("--repo", default=".", help="working clone of the hosts repository (default: .)")
    add.add_argument("--net", help="tinc network name (default tinc dir /etc/tinc/NET)")
    add.add_argument("--tinc-dir", help="where to write tinc.conf, hosts/NAME, keys, tinc-up/down")
    add.add_argument("--subnet", default="auto", help="CIDR, or auto: the lowest free one of the policy (default)")
    add.add_argument("--address", metavar="HOST [PORT]", help="public address others connect to (a gateway)")
    add.add_argument("--connect-to", action="append", default=[], metavar="NODE", help="ConnectTo (repeatable)")
    add.add_argument("--rsa-bits", type=int, default=4096, help="RSA key size (tinc 1.0 networks; default 4096)")
    owner_help = "an owner's SSH public key (repeatable; default: ~/.ssh/id_ed25519.pub when it exists)"
    add.add_argument("--owner-key", action="append", default=[], metavar="FILE.pub", help=owner_help)
    add.add_argument("--no-owner-key", action="store_true", help="name no owner: only admins may change the node")
    add.add_argument("--force", action="store_true", help="replace the keys of an existing tinc directory")
    add.add_argument("--dry-run", action="store_true", help="print what would be written, write nothing")
    add.set_defaults(handler=cmd_add_node)


def _completion_parser(commands: _Commands) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description=(
            "Print the completion script for bash or zsh. Try it with `source <(syncd completion bash)`; "
            "install it as /usr/local/share/bash-completion/completions/syncd or, for zsh, as _syncd in a "
            "directory of $fpath (`make install` does both)."
        ),
    )
    completion.add_argument("shell", choices=("bash", "zsh"), metavar="SHELL", help="bash or zsh")
    completion.set_defaults(handler=cmd_completion)


def _log_parser(commands: _Commands) -> None:
    log = commands.add_parser(
        "log",
        help="the audit trail: which commits this node applied, who signed them, what they changed",
        description=(
            "What this node applied, newest first: commit, committer time, when it was applied, the signer "
            "(principal and key fingerprint), the role the signer acted in (admin, owner:NAME, join:NAME) and "
            "the paths the commit changed. --format json prints one JSON object per line."
        ),
    )
    _config_option(log)
    log.add_argument("-n", type=int, default=None, metavar="N", help="the newest N commits only")
    log.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    log.set_defaults(handler=cmd_log)


def cmd_log(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.audit import render_json, render_text
    from syncd.config import load_config
    from syncd.state import read_log

    config = load_config(Path(args.config))
    entries = read_log(config.state_dir)[: args.n]
    out.write((render_json if args.format == "json" else render_text)(entries))
    return EXIT_OK


def _config_option(parser: argparse.ArgumentParser) -> None:
    """``-c CONFIG`` or its shorthand, a positional ``NET``: exactly one.

    Both land in ``args.config``.  Neither given leaves a placeholder that
    raises the usage error when the command opens it: argparse calls the
    actions in command-line order, so only the use can tell "missing"."""
    parser.add_argument(
        "-c", "--config", action=_ConfigAction, default=_NoConfig(), metavar="CONFIG", help="the node's config file"
    )
    parser.add_argument(
        "net",
        nargs="?",
        action=_NetAction,
        metavar="NET",
        help="short for -c /etc/syncd/NET.yaml ($SYNCD_CONFIG_DIR replaces /etc/syncd)",
    )


_CONFIG_USAGE = "give the node's config as -c CONFIG or as NET, not both"


class _NoConfig(os.PathLike[str]):
    def __fspath__(self) -> str:
        from syncd.config import config_dir

        raise UsageError(f"which network? give -c CONFIG, or NET (short for -c {config_dir()}/NET.yaml)")

    def __repr__(self) -> str:
        return "<no config given>"


class _ConfigAction(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: object, _: object = None
    ) -> None:
        if getattr(ns, "net", None) is not None:
            parser.error(_CONFIG_USAGE)
        ns.config = values


class _NetAction(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: object, _: object = None
    ) -> None:
        if values is None:
            return  # argparse calls a "?" positional even when it is absent
        from syncd.config import config_path

        if not isinstance(ns.config, _NoConfig):
            parser.error(_CONFIG_USAGE)
        try:
            ns.config = str(config_path(str(values)))
        except UsageError as exc:
            parser.error(exc.message)
        ns.net = values


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    repo = Path(args.repo) if args.repo is not None else None
    hosts_dir = Path(args.hosts_dir) if args.hosts_dir is not None else None
    report = run_check(repo, hosts_dir)
    from syncd.formats import format_github, report_json

    if args.format == "json":
        json.dump(report_json(report), out, indent=2)
        out.write("\n")
    elif args.format == "github":
        for finding in report.findings:
            out.write(format_github(finding) + "\n")
    else:
        for finding in report.findings:
            out.write(finding.format_text() + "\n")
        err.write(
            f"syncd check: {plural(report.nodes, 'node')}, {plural(report.subnets, 'subnet')}: "
            f"{plural(report.errors, 'error')}, {plural(report.warnings, 'warning')}\n"
        )
    return EXIT_REFUSED if report.failed(args.strict) else EXIT_OK


def cmd_sync(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.agent import stale_warning, sync_once
    from syncd.config import load_config
    from syncd.hostsdir import installed_reader

    config = load_config(Path(args.config))
    if args.log:
        return _sync_logged(config, args, err)
    result = sync_once(config, dry_run=args.dry_run, allow_rewind=args.allow_rewind)
    for warning in result.warnings:
        err.write(f"warning: {warning}\n")
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
    from syncd.agent import sync_once
    from syncd.log import get_logger, setup_logging
    from syncd.runloop import log_failure, log_result

    setup_logging(err)
    log = get_logger()
    try:
        result = sync_once(config, dry_run=args.dry_run, allow_rewind=args.allow_rewind)
    except (Exception, KeyboardInterrupt) as exc:
        failed = outcome(exc)
        log_failure(log, config, failed)
        return failed.exit_code
    if args.dry_run:
        log.info("sync.planned", net=config.net, commit=result.commit, plan=result.plan.describe())
    else:
        log_result(log, config, result)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.config import load_config
    from syncd.log import get_logger, setup_logging
    from syncd.runloop import RunLoop

    config = load_config(Path(args.config))
    setup_logging(err)
    return RunLoop(config, get_logger()).run()


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.config import load_config
    from syncd.status import node_status, render_status

    config = load_config(Path(args.config))
    status = node_status(config)
    if args.format == "json":
        json.dump(status, out, indent=2)
        out.write("\n")
    else:
        out.write(render_status(status))
    return EXIT_OK if status["healthy"] else EXIT_REFUSED


def cmd_add_node(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.onboard import next_steps, owner_keys, prepare, tinc_dir_of, write

    tinc_dir, net = tinc_dir_of(args.net, args.tinc_dir)
    owners, note = owner_keys(args.owner_key, args.no_owner_key)
    repo = Path(args.repo).resolve()  # absolute: the next steps name it
    node = prepare(
        args.name,
        repo=repo,
        tinc_dir=tinc_dir,
        net=net,
        subnet=args.subnet,
        address=args.address,
        connect_to=tuple(args.connect_to),
        force=args.force,
        rsa_bits=args.rsa_bits,
        dry_run=args.dry_run,
        owners=owners,
    )
    for finding in node.warnings:
        err.write(f"note: the repository has another problem: {finding.format_text()}\n")
    out.write(f"node {node.name}: subnet {node.subnet}, address {node.vpn_address}, ")
    out.write(f"ConnectTo {', '.join(node.connect_to) or '(none: others connect to it)'}\n")
    out.writelines(f"owner {owner.fingerprint} ({owner.source}): {owner.line}\n" for owner in owners)
    err.write(f"note: {note}\n" if note else "")
    if args.dry_run:
        for planned in node.files:
            out.write(f"\n--- {planned.path} (mode {planned.mode:04o})\n")
            out.write(planned.data.decode())
        return EXIT_OK
    for path in write(node):
        out.write(f"wrote {path}\n")
    out.write(next_steps(node, repo))
    return EXIT_OK


def cmd_completion(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.clidoc import describe
    from syncd.completion import script

    out.write(script(describe(build_parser()), args.shell))
    return EXIT_OK


def describe_reload(reloaded: Reloaded) -> str:
    if reloaded.method == "none":
        return f"tincd not reloaded ({reloaded.detail})"
    return f"reloaded tincd ({reloaded.method}): {reloaded.detail}"


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; every failure is mapped by ``errors.outcome`` to
    its exit code and printed as one message (and a hint on a second line),
    never a traceback (unless SYNCD_DEBUG=1, for an internal error)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    command = "syncd"
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            return int(exc.code or 0)
        command = f"syncd {args.command}"
        code: int = args.handler(args, out, err)
    except (Exception, KeyboardInterrupt) as exc:
        failed = outcome(exc)
        if failed.reason == "internal-error" and os.environ.get("SYNCD_DEBUG"):
            traceback.print_exception(exc, file=err)
        err.write(f"{command}: {failed.line()}\n")
        return failed.exit_code
    return code
