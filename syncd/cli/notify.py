"""``syncd notify``: tell nodes' agents that a new tip exists (a git
server's ``post-receive`` hook; docs/server-hook.md).  A notification
carries no trust: each agent that hears it fetches and verifies as always."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from syncd.errors import TransientError, UsageError

if TYPE_CHECKING:
    from typing import TypeAlias

    _Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

ZERO = "0" * 40


def add_parser(commands: _Commands) -> None:
    notify = commands.add_parser(
        "notify",
        help="tell nodes' agents that a new commit was pushed (a git server's post-receive hook)",
        description=(
            "Send one UDP notification naming COMMIT to each node's agent: those given with --to, else every "
            "node in the installed host files of the node config given with -c (each agent's address from "
            "its host file). The agents fetch and verify as always: a notification carries no trust. "
            "Exit 0: sent (or nothing to tell); 2: usage error; 3: nothing could be sent."
        ),
    )
    notify.add_argument("-c", "--config", metavar="CONFIG", help="a node's config: its network, port and hosts")
    notify.add_argument("--net", metavar="NAME", help="the tinc network's name (default: the config's)")
    notify.add_argument(
        "--to", action="append", default=[], metavar="ADDRESS[:PORT]", help="an agent to tell (repeatable)"
    )
    notify.add_argument("--port", type=int, metavar="PORT", help="the agents' port (default: notify.port, else 6550)")
    what = notify.add_mutually_exclusive_group(required=True)
    what.add_argument("--commit", metavar="ID", help="the commit id that was pushed")
    what.add_argument(
        "--post-receive", action="store_true", help="read git's post-receive lines (OLD NEW REF) on stdin"
    )
    notify.add_argument("--branch", metavar="BRANCH", help="with --post-receive: the branch nodes follow")
    notify.set_defaults(handler=cmd_notify)


def cmd_notify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from syncd.sync.gossip import PORT, Notice, directory, is_commit
    from syncd.sync.listener import send

    config = None
    if args.config:
        from syncd.node.config import load_config

        config = load_config(Path(args.config))
    net = args.net or (config.net if config else None)
    if not net:
        raise UsageError("which network? give --net NAME, or a node's config with -c CONFIG")
    port = args.port or (config.notify.port if config else PORT)
    branch = args.branch or (config.repo.branch if config else "main")
    commit = pushed(sys.stdin, branch) if args.post_receive else args.commit.lower()
    if commit is None:
        out.write(f"syncd notify: nothing pushed to refs/heads/{branch}: nobody told\n")
        return 0
    if not is_commit(commit):
        raise UsageError(f"--commit {commit!r} is not a full commit id (40 or 64 hex digits)")
    if args.to:
        targets = [target(text, port) for text in args.to]
    elif config is not None:
        targets = [(address, port) for address in directory(config.tinc.hosts_dir).values()]
    else:
        raise UsageError("whom to tell? give --to ADDRESS (repeatable), or a node's config with -c CONFIG")
    sent, problems = send(Notice(net, commit, "hook"), targets)
    for problem in problems:
        err.write(f"syncd notify: {problem}\n")
    if targets and not sent:
        raise TransientError(f"no agent could be told of {commit[:12]} ({len(targets)} tried)")
    out.write(f"syncd notify: told {sent} agent{'' if sent == 1 else 's'} of {commit[:12]} (network {net})\n")
    return 0


def pushed(lines: TextIO, branch: str) -> str | None:
    """The new tip of ``branch`` from git's post-receive input, or None
    (another branch, or the branch deleted)."""
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[2] == f"refs/heads/{branch}" and parts[1].strip("0"):
            return parts[1].lower()
    return None


def target(text: str, default_port: int) -> tuple[str, int]:
    """``ADDRESS``, ``IPv4:PORT`` or ``[IPv6]:PORT`` → (address, port)."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise UsageError(f"--to {text!r}: write [IPv6]:PORT")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise UsageError(f"--to {text!r}: the port must be a number")
        port = int(port_text)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise UsageError(f"--to {text!r}: {host!r} is not an IP address") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"--to {text!r}: port {port} must be from 1 to 65535")
    return address, port
