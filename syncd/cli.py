"""The command line: argparse, output formats, exit codes.  No logic lives
here; every error is a ``SyncdError`` mapped once, in ``main``."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from syncd import __version__
from syncd.errors import SyncdError, UsageError
from syncd.findings import Finding
from syncd.policy import DEFAULT_POLICY, POLICY_FILE, parse_policy
from syncd.validate import Report, validate_network
from syncd.worktree import read_hosts_dir, read_policy

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.reload import Reloaded

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_TRANSIENT = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep a tinc VPN's host files in sync from a signed git repository.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    status = commands.add_parser(
        "status",
        help="what is installed, from which commit, and how the last passes went",
        description="Show the last applied commit, its signer, the managed files, drift and the last error.",
    )
    _config_option(status)
    status.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    status.set_defaults(handler=cmd_status)

    add = commands.add_parser(
        "add-node",
        help="create a new node: keys, a free subnet, host file, tinc.conf, tinc-up/down",
        description=(
            "Set up a new tinc node the way the classic guide does by hand, checked against the hosts "
            "repository: a unique name, the next free subnet of the policy, a key pair tincd reads, the "
            "node's tinc directory, and its host file in the repository (to commit, signed, and push). "
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
    add.add_argument("--force", action="store_true", help="replace the keys of an existing tinc directory")
    add.add_argument("--dry-run", action="store_true", help="print what would be written, write nothing")
    add.set_defaults(handler=cmd_add_node)

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
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="CONFIG", help="node config, e.g. /etc/syncd/NET.yaml")


def run_check(repo: Path | None, hosts_dir: Path | None) -> Report:
    """Read a working tree (or a bare hosts directory) and validate it."""
    policy, policy_findings = DEFAULT_POLICY, list[Finding]()
    if repo is not None or hosts_dir is None:
        root = repo if repo is not None else Path()
        if not root.is_dir():
            raise UsageError(f"{root}: no such directory")
        data = read_policy(root)
        if data is not None:
            policy, policy_findings = parse_policy(data, POLICY_FILE)
    if hosts_dir is not None:
        directory, shown = hosts_dir, str(hosts_dir)
    else:
        directory, shown = root / policy.hosts_dir, policy.hosts_dir
    entries = read_hosts_dir(directory, policy.max_file_bytes)
    return validate_network(policy, entries, shown, policy_findings, installed=hosts_dir is not None)


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    repo = Path(args.repo) if args.repo is not None else None
    hosts_dir = Path(args.hosts_dir) if args.hosts_dir is not None else None
    # A check builds a few objects per host-file line and creates no cycles:
    # the cyclic collector would only rescan them, again and again (a fifth
    # of the run time on 10k nodes).  This process exits right after.
    gc.disable()
    try:
        report = run_check(repo, hosts_dir)
    finally:
        gc.enable()
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
            f"syncd check: {report.nodes} nodes, {report.subnets} subnets: "
            f"{report.errors} errors, {report.warnings} warnings\n"
        )
    return EXIT_REFUSED if report.failed(args.strict) else EXIT_OK


def cmd_sync(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.agent import sync_once
    from syncd.config import load_config

    config = load_config(Path(args.config))
    if args.log:
        return _sync_logged(config, args, err)
    result = sync_once(config, dry_run=args.dry_run, allow_rewind=args.allow_rewind)
    for warning in result.warnings:
        err.write(f"warning: {warning}\n")
    plan = result.plan
    counts = f"{len(plan.add)} added, {len(plan.update)} updated, {len(plan.remove)} removed"
    head = f"{result.commit[:12]} signed by {result.signer}"
    if result.status == "planned":
        out.write(f"plan for {head} from {result.url}: {counts}\n")
        for line in plan.describe():
            out.write(f"  {line}\n")
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
            history = (
                f"{result.new_commits} new commit{'s' if result.new_commits != 1 else ''} since {result.previous[:12]}"
            )
        out.write(f"applied {head} ({history}): {counts}\n")
        for line in plan.describe():
            out.write(f"  {line}\n")
        if result.reloaded is not None:
            out.write(f"  {describe_reload(result.reloaded)}\n")
    return EXIT_OK


def _sync_logged(config: Config, args: argparse.Namespace, err: TextIO) -> int:
    """``sync --log``: structured events instead of the summary (for the
    systemd timer: one JSON object per line in the journal)."""
    from syncd.agent import sync_once
    from syncd.log import get_logger, setup_logging
    from syncd.runloop import failure_event, log_result

    setup_logging(err)
    log = get_logger()
    try:
        result = sync_once(config, dry_run=args.dry_run, allow_rewind=args.allow_rewind)
    except SyncdError as exc:
        log.error(failure_event(exc), net=config.net, reason=exc.reason, error=exc.message)
        return exc.exit_code
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
    return EXIT_OK


def cmd_add_node(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.onboard import prepare, write

    if args.tinc_dir is None and args.net is None:
        raise UsageError("give --net NET (tinc dir /etc/tinc/NET) or --tinc-dir DIR")
    if not 2048 <= args.rsa_bits <= 8192:
        raise UsageError("--rsa-bits must be from 2048 to 8192")
    net = args.net or Path(args.tinc_dir).name
    tinc_dir = Path(args.tinc_dir) if args.tinc_dir else Path("/etc/tinc") / net
    node = prepare(
        args.name,
        repo=Path(args.repo),
        tinc_dir=tinc_dir,
        net=net,
        subnet=args.subnet,
        address=args.address,
        connect_to=tuple(args.connect_to),
        force=args.force,
        rsa_bits=args.rsa_bits,
    )
    for finding in node.warnings:
        err.write(f"note: the repository has another problem: {finding.format_text()}\n")
    out.write(f"node {node.name}: subnet {node.subnet}, address {node.vpn_address}, ")
    out.write(f"ConnectTo {', '.join(node.connect_to) or '(none: others connect to it)'}\n")
    if args.dry_run:
        for planned in node.files:
            out.write(f"\n--- {planned.path} (mode {planned.mode:04o})\n")
            out.write("(private key, not shown)\n" if planned.secret else planned.data.decode())
        return EXIT_OK
    for path in write(node):
        out.write(f"wrote {path}\n")
    repo = Path(args.repo)
    host = node.files[-1].path
    out.write(
        f"""
Next steps:
  1. In {repo}: git add {host.relative_to(repo) if host.is_relative_to(repo) else host}
     then commit it signed by an admin and push:  git commit -S -m "Add {node.name}" && git push
  2. On {node.name}, install syncd's config as /etc/syncd/{net}.yaml:
       net: {net}
       node: {node.name}
       repo: {{url: <the hosts repository URL>}}
       trust: {{allowed_signers: /etc/syncd/{net}.allowed_signers}}
       tinc: {{dir: {node.tinc_dir}}}
     and the admins' allowed_signers file, then:  syncd sync -c /etc/syncd/{net}.yaml
  3. Start tinc and keep the host files in sync:
       systemctl enable --now tinc@{net} syncd@{net}.timer
"""
    )
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


def report_json(report: Report) -> dict[str, object]:
    return {
        "findings": [
            {
                "path": f.path,
                "line": f.line,
                "severity": str(f.severity),
                "code": f.code,
                "message": f.message,
                "related": [{"path": r.path, "line": r.line} for r in f.related],
            }
            for f in report.findings
        ],
        "nodes": report.nodes,
        "subnets": report.subnets,
    }


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_github(finding: Finding) -> str:
    """A GitHub Actions workflow command that annotates the file and line."""
    return (
        f"::{finding.severity} file={_escape_property(finding.path)},line={finding.line},"
        f"title={_escape_property(finding.code)}::{_escape_data(finding.message)}"
    )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        code: int = args.handler(args, out, err)
    except SyncdError as exc:
        err.write(f"syncd {args.command}: {exc.message}\n")
        return exc.exit_code
    except OSError as exc:
        # the disk, a permission, the network: nothing was refused, retry later
        err.write(f"syncd {args.command}: {exc}\n")
        return EXIT_TRANSIENT
    except Exception as exc:
        # A bug, not a verdict on the input: never exit 1 ("refused") for it.
        if os.environ.get("SYNCD_DEBUG"):
            traceback.print_exc(file=err)
        err.write(
            f"syncd {args.command}: internal error: {type(exc).__name__}: {exc} (SYNCD_DEBUG=1 shows the traceback)\n"
        )
        return EXIT_TRANSIENT
    return code
