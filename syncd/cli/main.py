"""The command line: argparse, output formats, exit codes.  No logic lives
here; every failure is mapped once, by ``errors.outcome``, in ``main``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from syncd import __version__
from syncd.cli.netarg import config_option
from syncd.errors import EXIT_OK, EXIT_REFUSED, Reason, outcome
from syncd.findings import plural

if TYPE_CHECKING:
    from typing import TypeAlias

    from syncd.rules.validate import Report

    _Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command`` (a command's name, as
    ``main`` finds it first on its command line) that command's parser
    alone: it parses that command line exactly as the whole one does (the
    usage names no commands: ``COMMAND``) and costs a fresh process one
    parser instead of ten."""
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep a tinc VPN's host files in sync from a signed git repository.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add in _PARSERS:
        if command is None or command == name:
            add(commands)
    return parser


def _notify_parser(commands: _Commands) -> None:
    from syncd.cli import notify

    notify.add_parser(commands)


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
    config_option(sync)
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
            "failure), at once on SIGHUP or a notification (`syncd notify`, another agent, a webhook) naming a commit "
            "it has not applied, and a re-apply of the last verified commit within a second when a "
            "managed host file is changed or deleted. Logs one JSON object per line off a terminal. "
            "Supports systemd Type=notify and WatchdogSec."
        ),
    )
    config_option(run)
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
    config_option(status)
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
            "Nothing in the tinc directory is replaced without --force: add-node names each file that is "
            "already there and stops. Exit 1 (nothing written) when the name, the subnet or an existing file "
            "is a problem."
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
    add.add_argument(
        "--force",
        action="store_true",
        help="replace what the tinc directory already has (tinc.conf, tinc-up/down, hosts/NAME, keys)",
    )
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
    config_option(log)
    log.add_argument("-n", type=int, default=None, metavar="N", help="the newest N commits only")
    log.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    log.set_defaults(handler=cmd_log)


def cmd_log(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.cli.audit import render_json, render_text
    from syncd.node.config import load_config
    from syncd.node.state import read_log

    config = load_config(Path(args.config))
    entries = read_log(config.state_dir)[: args.n]
    out.write((render_json if args.format == "json" else render_text)(entries))
    return EXIT_OK


def _verify_parser(commands: _Commands) -> None:
    verify = commands.add_parser(
        "verify",
        help="a node's whole acceptance rule on a repository: for CI and a git server's pre-receive hook",
        description=(
            "Check an update OLD..NEW of a repository as every node would: signatures, who may change what "
            "(admins, owners, joining), no rewound or backdated history, and the tree as `syncd check` sees it. "
            "Without OLD, NEW is checked as a node's first sync (from the newest commit the allowed_signers "
            "trusts). With --pre-receive it reads git's 'OLD NEW REF' lines on stdin and checks every branch "
            "(or --branch), reading the pushed objects from git's quarantine. Exit 0: accepted; 1: refused "
            "(the same message a node would give); 2: usage."
        ),
    )
    verify.add_argument("revs", nargs="*", metavar="[OLD] NEW", help="commits or branch names")
    verify.add_argument("--repo", default=None, metavar="DIR", help="the repository (default: $GIT_DIR, else .)")
    verify.add_argument("--allowed-signers", required=True, metavar="FILE", help="the nodes' allowed_signers")
    verify.add_argument("--pre-receive", action="store_true", help="run as a git pre-receive hook")
    verify.add_argument("--branch", action="append", default=[], metavar="BRANCH", help="check only this branch")
    verify.add_argument("--no-follow-repo", action="store_true", help="as nodes with trust.follow_repo: false")
    verify.add_argument("--verify", choices=("all", "tip"), default="all", help="as nodes with trust.verify")
    verify.add_argument("--max-clock-skew", default="1h", metavar="DURATION", help="as trust.max_clock_skew")
    verify.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.cli.verify import Options, run

    options = Options.of(args.allowed_signers, args.no_follow_repo, args.verify, args.max_clock_skew, args.branch)
    repo = Path(args.repo or os.environ.get("GIT_DIR") or ".")
    return run(repo, options, args.revs, sys.stdin if args.pre_receive else None, out, err)


def _show_parser(commands: _Commands) -> None:
    show = commands.add_parser(
        "show",
        help="the network as the repository says it is: nodes, owners, last signed changes, allocation",
        description=(
            "Show every node of a hosts repository's working tree (default: .) with its subnets, Address "
            "lines, key kinds, owners and the last signed change to its file (when, by whom, in which role), "
            "the policy, how much of the allocate prefix is taken, and the nodes older than stale_after. "
            "With -c CONFIG (or -c NET): the commit that node applied. Formats: a text table, JSON, a graphviz "
            "graph (dot -Tsvg), or one self-contained HTML page. Exit 0; 2: usage or config error."
        ),
    )
    show.add_argument("repo", nargs="?", default=None, metavar="REPO", help="repository working tree (default: .)")
    show.add_argument("-c", "--config", metavar="CONFIG", help="a node's config (or NET): what it applied")
    show.add_argument("--allowed-signers", metavar="FILE", help="the admins (default: REPO/allowed_signers)")
    show.add_argument("--format", choices=("text", "json", "dot", "html"), default="text", help="output format")
    show.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of stdout")
    show.set_defaults(handler=cmd_show)


def cmd_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.cli.show import render, run

    text = render(run(args.repo, args.config, args.allowed_signers), args.format)
    if args.output is None:
        out.write(text)
    else:
        from syncd.node.files import write_atomic

        write_atomic(Path(args.output), text.encode(), 0o644)
    return EXIT_OK


def run_check(repo: Path | None, hosts_dir: Path | None) -> Report:
    """``worktree.run_check``, imported when a check runs (not on every command)."""
    from syncd.cli.worktree import run_check as check

    return check(repo, hosts_dir)


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    repo = Path(args.repo) if args.repo is not None else None
    hosts_dir = Path(args.hosts_dir) if args.hosts_dir is not None else None
    report = run_check(repo, hosts_dir)
    from syncd.cli.formats import format_github, report_json

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
    from syncd.cli.sync import run

    return run(args, out, err)


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.cli.logsetup import get_logger, setup_logging
    from syncd.node.config import load_config
    from syncd.sync.runloop import RunLoop

    config = load_config(Path(args.config))
    setup_logging(err)
    return RunLoop(config, get_logger()).run()


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.cli.status import node_status, render_status
    from syncd.node.config import load_config

    config = load_config(Path(args.config))
    status = node_status(config)
    if args.format == "json":
        json.dump(status, out, indent=2)
        out.write("\n")
    else:
        out.write(render_status(status))
    return EXIT_OK if status["healthy"] else EXIT_REFUSED


def cmd_add_node(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.cli.addnode import run

    return run(args, out, err)


def cmd_completion(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.cli.clidoc import describe
    from syncd.cli.completion import script

    out.write(script(describe(build_parser()), args.shell))
    return EXIT_OK


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; every failure is mapped by ``errors.outcome`` to
    its exit code and printed as one message (and a hint on a second line),
    never a traceback (unless SYNCD_DEBUG=1, for an internal error)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    command = "syncd"
    try:
        try:
            words = list(sys.argv[1:] if argv is None else argv)
            named = words[0] if words and words[0] in _COMMANDS else None
            args = build_parser(named).parse_args(words)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            return int(exc.code or 0)
        command = f"syncd {args.command}"
        code: int = args.handler(args, out, err)
    except (Exception, KeyboardInterrupt) as exc:
        failed = outcome(exc)
        if failed.reason is Reason.INTERNAL_ERROR and os.environ.get("SYNCD_DEBUG"):
            traceback.print_exception(exc, file=err)
        err.write(f"{command}: {failed.line()}\n")
        return failed.exit_code
    return code


_PARSERS: tuple[tuple[str, Callable[[_Commands], None]], ...] = (
    ("check", _check_parser),
    ("sync", _sync_parser),
    ("run", _run_parser),
    ("status", _status_parser),
    ("add-node", _add_node_parser),
    ("completion", _completion_parser),
    ("log", _log_parser),
    ("verify", _verify_parser),
    ("notify", _notify_parser),
    ("show", _show_parser),
)
_COMMANDS = frozenset(name for name, _ in _PARSERS)
