"""``syncd show``: the network as the repository says it is.

Every node with its subnets, ``Address`` lines, key kinds and owners, the
last signed change to its file (``sync.lastchange``: who signed it, in which
role, from the authority rule a node runs), the policy, how much of the
``allocate`` prefix is taken and which block is next, and the stale nodes.

The network is read once into one document (a dict, the JSON output as it
is); the text table, the DOT graph and the HTML page are each drawn from
that document, so every format says the same.  The tree is a working tree
(validated as ``syncd check`` validates it), or with ``-c NET`` the commit
the node applied, read from its store (validated as a pass does).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.errors import UsageError
from syncd.findings import Severity
from syncd.rules.allocate import claimed, next_free, used_blocks
from syncd.rules.stale import is_stale
from syncd.rules.units import format_duration
from syncd.signing.sshsig import fingerprint
from syncd.tinc.conf import Entry, read_config

if TYPE_CHECKING:
    from syncd.rules.policy import Policy
    from syncd.rules.validate import Report
    from syncd.signing.allowed_signers import AllowedSigner
    from syncd.sync.lastchange import History

Doc = dict[str, object]


@dataclass(frozen=True, slots=True)
class Network:
    """What one tree of the repository holds, with its history."""

    label: str  # the working tree, or "NET (node NAME) at COMMIT"
    report: Report
    files: Mapping[str, bytes]  # the valid nodes' host files
    history: History


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


def addresses(path: str, data: bytes) -> list[str]:
    """Every ``Address`` line, in order (tincd tries each in turn), read by
    tincd's own line reader."""
    found: list[str] = []
    if b"address" not in data.lower():
        return found  # no such line can be there: most nodes have none, and reading costs

    def take(entry: Entry) -> None:
        if entry.variable.lower() == "address":
            found.append(entry.value)

    read_config(path, data, [], take)
    return found


def network_doc(network: Network, now: float) -> Doc:
    """The network as one JSON-ready document (``--format json``)."""
    report, history = network.report, network.history
    policy = report.policy
    nodes = []
    # a signer the roles do not name (no allowed_signers) is named by its owner line, if any
    owner_names = {fingerprint(key): comment for host in report.hosts.values() for key, comment in host.owners}
    for name in sorted(report.hosts, key=str.lower):
        host = report.hosts[name]
        change = history.changes.get(name)
        stale: bool | None = None
        if policy.stale_after is not None and history.known and name in history.at_tip:
            stale = is_stale(change.when if change else None, policy.stale_after, now)
        nodes.append(
            {
                "name": name,
                "subnets": [
                    {
                        "subnet": str(subnet),
                        "route": policy.is_route(name, subnet),
                        "shared": policy.shared_entry(name, subnet) is not None,
                    }
                    for subnet, _ in host.subnets
                ],
                "addresses": addresses(host.path, network.files.get(name, b"")),
                "keys": [f"{key.algorithm} {key.bits}" for key, _ in host.keys],
                "owners": [{"comment": comment, "key": fingerprint(key)} for key, comment in host.owners],
                "last_change": None
                if change is None
                else {
                    "commit": change.commit,
                    "when": iso(change.when),
                    "signer": change.signer or owner_names.get(change.key),
                    "key": change.key,
                    "role": change.role,
                    "summary": change.summary,
                },
                "stale": stale,
                "errors": sum(1 for f in host.findings if f.severity is Severity.ERROR),
            }
        )
    return {
        "source": network.label,
        "generated_at": iso(now),
        "history": {"known": history.known, "tip": history.tip, "note": history.roles_note},
        "policy": policy_doc(policy),
        "allocation": allocation_doc(policy, report),
        "nodes": nodes,
        "not_nodes": not_nodes(report),
        "findings": {"errors": report.errors, "warnings": report.warnings},
    }


def not_nodes(report: Report) -> list[Doc]:
    """The entries of the hosts directory that are no node tincd reads (an
    invalid name, a symlink, a file too large...), with the codes of their
    findings: the files an operator counts but the network does not have."""
    prefix = report.policy.hosts_dir.rstrip("/") + "/"
    codes: dict[str, set[str]] = {}
    for finding in report.findings:
        name = finding.path.removeprefix(prefix)
        if finding.path.startswith(prefix) and name not in report.hosts:
            codes.setdefault(finding.path, set()).add(finding.code)
    return [{"path": path, "codes": sorted(found)} for path, found in sorted(codes.items())]


def policy_doc(policy: Policy) -> Doc:
    return {
        "hosts_dir": policy.hosts_dir,
        "tinc": policy.tinc,
        "prefixes": [str(p) for p in policy.prefixes],
        "routes": {node: [str(s) for s in subnets] for node, subnets in sorted(policy.routes.items())},
        "shared": [
            {"subnet": str(s.subnet), "nodes": "*" if s.nodes is None else sorted(s.nodes)} for s in policy.shared
        ],
        "join": policy.join,
        "stale_after": None if policy.stale_after is None else format_duration(policy.stale_after),
    }


def allocation_doc(policy: Policy, report: Report) -> list[Doc]:
    """How much of the ``allocate`` prefix is taken, in blocks of its
    size, and the block ``add-node --subnet auto`` would take next."""
    if policy.allocate is None:
        return []
    prefix, size = policy.allocate.prefix, policy.allocate.size
    taken = claimed(policy, report.hosts, size)
    from syncd.rules.allocate import AllocationError

    try:
        free: str | None = str(next_free(prefix, size, taken))
    except AllocationError:
        free = None
    return [
        {
            "prefix": str(prefix),
            "size": size,
            "used": used_blocks(prefix, size, taken),
            "total": 1 << (size - prefix.prefixlen),
            "next_free": free,
        }
    ]


# --- reading the network ------------------------------------------------------------


def read_worktree(repo: Path, signers: Sequence[AllowedSigner] | None) -> Network:
    """A working tree, checked as ``syncd check`` checks it; its history
    from its git repository when it has one.  The roles come from
    ``signers`` (``--allowed-signers``), else the tree's own
    ``allowed_signers``."""
    from syncd.cli.worktree import check_worktree, read_repo_file

    if not repo.is_dir():
        raise UsageError(f"{repo}: no such directory")
    if signers is None:
        own = read_repo_file(repo, "allowed_signers")
        signers = _parse_signers(own, f"{repo}/allowed_signers") if own is not None else None
    report, files, history = check_worktree(repo, None, with_history=True, signers=signers)
    return Network(str(repo), report, files, history)


def _parse_signers(data: bytes, label: str) -> list[AllowedSigner] | None:
    from syncd.errors import AllowedSignersError
    from syncd.signing.allowed_signers import parse_allowed_signers

    try:
        return parse_allowed_signers(data, label)
    except AllowedSignersError:
        return None  # syncd check reports it (admins-invalid); the roles stay unknown


def read_applied(config_path: Path) -> Network:
    """What a node applied: the commit in its state, read from its store,
    validated as the pass validated it; roles from the node's trust root."""
    from syncd.git.repository import GitRepository
    from syncd.node.config import load_config, load_signers
    from syncd.node.state import STORE_DIR, load_state
    from syncd.sync.content import read_and_validate
    from syncd.sync.lastchange import last_changes

    config = load_config(config_path)
    state = load_state(config.state_dir)
    if state.last_applied is None:
        raise UsageError(f"network {config.net}: nothing applied yet", hint=config.command("sync"))
    repo = GitRepository.reading(config.state_dir / STORE_DIR)
    try:
        report, desired, _ = read_and_validate(repo, state.last_applied)
        files = {name: desired[name] for name in report.hosts}
        signers = load_signers(config)
        history = last_changes(
            repo, state.last_applied, report.policy.hosts_dir, signers, follow_repo=config.trust.follow_repo
        )
    finally:
        repo.close()
    label = f"{config.net} (node {config.node}) at {state.last_applied[:12]}"
    return Network(label, report, files, history)


def run(repo: str | None, config: str | None, signers_file: str | None, now: float | None = None) -> Doc:
    """``syncd show``'s document, from ``REPO`` or ``-c CONFIG``."""
    if config is not None:
        if repo is not None or signers_file is not None:
            raise UsageError("give REPO (with --allowed-signers) or -c CONFIG, not both")
        network = read_applied(_config_file(config))
    else:
        signers = None
        if signers_file is not None:
            from syncd.node.config import read_signers_file

            signers = read_signers_file(Path(signers_file), "--allowed-signers ")
        network = read_worktree(Path(repo or "."), signers)
    return network_doc(network, time.time() if now is None else now)


def _config_file(config: str) -> Path:
    """``-c``'s value: a config file, or a network's name (``NET`` is short
    for ``/etc/syncd/NET.yaml``, as for every command that takes ``-c``)."""
    from syncd.node.config import config_path

    if "/" in config or config.endswith((".yaml", ".yml")) or Path(config).exists():
        return Path(config)
    return config_path(config)


def render(doc: Doc, form: str) -> str:
    """The document in one of ``syncd show``'s formats."""
    from syncd.cli import showformats

    if form == "json":
        return showformats.render_json(doc)
    if form == "dot":
        return showformats.visible(showformats.render_dot(doc))
    if form == "html":
        from syncd.cli.showhtml import render_html

        return render_html(doc)
    return showformats.visible(showformats.render_text(doc))  # a host file's bytes never reach a terminal raw
