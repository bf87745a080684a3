"""``syncd add-node``: everything the classic tinc guide does by hand to add
a node, checked against the hosts repository first.

It prepares the whole result in memory (``prepare``): name, subnet, keys,
host file (with its owners' SSH keys on ``# syncd-owner:`` lines, so they
may edit it later without an admin), ``tinc.conf``, ``tinc-up``/``tinc-down``;
validates the network
with the new host file exactly as ``syncd check`` would; and only then
writes (``write``).  Any refusal leaves no file behind anywhere.
"""

from __future__ import annotations

import argparse
import ipaddress
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from syncd.cli.ownerkeys import OwnerKey, from_options
from syncd.cli.worktree import WorkTree
from syncd.errors import EXIT_OK, ConfigError, Reason, RefusedError, UsageError
from syncd.findings import Finding, Severity
from syncd.node.config import config_path, tinc_conf_name
from syncd.node.privkeys import KeyPair, ed25519_keypair, rsa_keypair
from syncd.node.tincdir import PlannedFile, existing, tinc_conf, tinc_down, tinc_up, write_all
from syncd.rules.allocate import AllocationError, claimed, default_size, next_free, reserved
from syncd.rules.policy import POLICY_FILE, Policy
from syncd.rules.tree import EntryKind, Snapshot, TreeEntry, snapshot
from syncd.rules.validate import Report, check_tree
from syncd.tinc.hostfile import host_problem
from syncd.tinc.names import NAME_RULE, is_node_name
from syncd.tinc.subnet import Kind, Subnet, SubnetError, format_subnet, parse_subnet

PRIVATE_KEY_FILES = ("rsa_key.priv", "ed25519_key.priv")
THEIR_KEY = "$HOME/.ssh/id_ed25519"  # an admin's or member's signing key, where ssh-keygen puts it
TINC_ROOT = Path("/etc/tinc")  # tincd's configuration directory: /etc/tinc/NET


@dataclass(frozen=True, kw_only=True)
class Request:
    """What ``syncd add-node`` is asked to set up (its command line)."""

    name: str
    repo: Path  # a working clone of the hosts repository
    tinc_dir: Path
    net: str
    subnet: str = "auto"  # a CIDR, or the lowest free one of the policy
    address: str | None = None  # "HOST [PORT]" others connect to
    connect_to: tuple[str, ...] = ()
    force: bool = False  # replace what the tinc directory already has
    rsa_bits: int = 4096
    dry_run: bool = False
    owners: tuple[OwnerKey, ...] = ()


@dataclass(frozen=True, kw_only=True)
class NewNode:
    name: str
    net: str
    tinc_dir: Path
    subnet: Subnet
    vpn_address: str  # "2002:102:304:6::1/48": the interface address tinc-up sets
    connect_to: tuple[str, ...]
    files: tuple[PlannedFile, ...]
    warnings: tuple[Finding, ...] = field(default_factory=tuple)
    dry_run: bool = False  # the key files and key lines are placeholders: never to be written
    owners: tuple[OwnerKey, ...] = ()
    join: str = "admins"  # the repository's policy: who may sign the commit that adds the node
    replaces: tuple[Path, ...] = ()  # files already in the tinc directory that --force replaces

    @property
    def host_file(self) -> PlannedFile:
        return next(f for f in self.files if f.path.parent.name == "hosts" and f.path.name == self.name)

    @property
    def repo_host_file(self) -> PlannedFile:
        """The copy in the repository's hosts directory, for the admin to commit."""
        return self.files[-1]


def prepare(request: Request) -> NewNode:
    """Everything ``add-node`` would write.  A dry run: the same, except
    that no key is generated (placeholders stand in for the keys), so what
    it shows is what the real run writes, key material aside."""
    name, repo, tinc_dir, rsa_bits, address = (
        request.name,
        request.repo,
        request.tinc_dir,
        request.rsa_bits,
        request.address,
    )
    if not 2048 <= rsa_bits <= 8192:
        raise UsageError("--rsa-bits must be from 2048 to 8192")
    if not is_node_name(name):
        raise RefusedError(f"{name!r} is not a valid tinc node name ({NAME_RULE})", reason=Reason.INVALID_CONTENT)
    if not repo.is_dir():
        raise UsageError(f"{repo}: no such directory (--repo is a working clone of the hosts repository)")
    tree = snapshot(WorkTree(repo))
    report, _ = check_tree(tree)
    policy = report.policy
    if any(f.severity is Severity.ERROR for f in report.policy_findings):
        raise RefusedError(
            "\n".join([f"{repo / POLICY_FILE} has errors:", *(f.format_text() for f in report.policy_findings)]),
            reason=Reason.INVALID_CONTENT,
        )
    hosts_path = repo / policy.hosts_dir
    clash = [e.name for e in tree.entries if e.name.lower() == name.lower()]
    if clash:
        raise RefusedError(
            f"{policy.hosts_dir}/{clash[0]} already exists: node names must be unique (any case)",
            reason=Reason.INVALID_CONTENT,
        )
    kinds = _key_kinds(policy)
    replaces = _replaced(tinc_dir, name, kinds, request.force)
    if "RSA" in kinds and rsa_bits < policy.min_rsa_bits:
        raise UsageError(f"--rsa-bits {rsa_bits} is under the policy's min_rsa_bits ({policy.min_rsa_bits})")

    chosen = _subnet(request.subnet, policy, report)
    vpn_address = _interface_address(chosen, policy)
    host_lines = _address_lines(address)
    peers = request.connect_to or _default_connect_to(report, address)
    for peer in peers:
        if peer not in report.hosts:
            raise UsageError(f"--connect-to: {peer!r} has no host file in {hosts_path}")
    host_text = "\n".join([*host_lines, f"Subnet = {format_subnet(chosen)}", *(o.line for o in request.owners)]) + "\n"
    others = _check_new_host(tree, policy.hosts_dir, name, host_text.encode())

    # Keys come last: an RSA 4096 key takes seconds, and a refusal needs none.
    keys = [_placeholder(k, rsa_bits) if request.dry_run else _keypair(k, rsa_bits) for k in kinds]
    host_bytes = (host_text + "".join(f"\n{k.public_text}" for k in keys)).encode()
    default_route = any(s.prefixlen == 0 and s.kind == chosen.kind for h in report.hosts.values() for s, _ in h.subnets)
    route = default_route and not address
    files = [
        PlannedFile(tinc_dir / "tinc.conf", tinc_conf(name, peers).encode(), 0o644),
        PlannedFile(tinc_dir / "hosts" / name, host_bytes, 0o644),
        PlannedFile(tinc_dir / "tinc-up", tinc_up(chosen, vpn_address, route).encode(), 0o755),
        PlannedFile(tinc_dir / "tinc-down", tinc_down(chosen, vpn_address, route).encode(), 0o755),
        *(PlannedFile(tinc_dir / k.private_file, k.private_pem, 0o600, secret=True) for k in keys),
        PlannedFile(hosts_path / name, host_bytes, 0o644),  # last: see repo_host_file
    ]
    return NewNode(
        name=name,
        net=request.net,
        tinc_dir=tinc_dir,
        subnet=chosen,
        vpn_address=vpn_address,
        connect_to=tuple(peers),
        files=tuple(files),
        warnings=others,
        dry_run=request.dry_run,
        owners=request.owners,
        join=policy.join,
        replaces=replaces,
    )


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``syncd add-node``: prepare, then print the plan (a dry run) or write it and the next steps."""
    tinc_dir, net = tinc_dir_of(args.net, args.tinc_dir)
    owners, note = from_options(args.owner_key, args.no_owner_key)
    repo = Path(args.repo).resolve()  # absolute: the next steps name it
    request = Request(
        name=args.name,
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
    node = prepare(request)
    for finding in node.warnings:
        err.write(f"note: the repository has another problem: {finding.format_text()}\n")
    out.write(f"node {node.name}: subnet {node.subnet}, address {node.vpn_address}, ")
    out.write(f"ConnectTo {', '.join(node.connect_to) or '(none: others connect to it)'}\n")
    out.writelines(f"owner {owner.fingerprint} ({owner.source}): {owner.line}\n" for owner in owners)
    err.write(f"note: {note}\n" if note else "")
    if node.replaces:
        replaced = ", ".join(str(path) for path in node.replaces)
        err.write(f"note: --force: {'would replace' if args.dry_run else 'replacing'} {replaced}\n")
    if args.dry_run:
        for planned in node.files:
            out.write(f"\n--- {planned.path} (mode {planned.mode:04o})\n")
            out.write(planned.data.decode())
        return EXIT_OK
    for path in write(node):
        out.write(f"wrote {path}\n")
    out.write(next_steps(node, repo))
    return EXIT_OK


def _replaced(tinc_dir: Path, name: str, kinds: list[str], force: bool) -> tuple[Path, ...]:
    """The files of ``tinc_dir`` that add-node would replace: none without
    ``--force``, which it then refuses, naming every one of them (and the
    node its tinc.conf names), before any key is generated."""
    planned = [tinc_dir / f for f in ("tinc.conf", f"hosts/{name}", "tinc-up", "tinc-down")]
    planned += [tinc_dir / _private_file(kind) for kind in kinds]
    there = existing([*planned, *(tinc_dir / f for f in PRIVATE_KEY_FILES)])
    for path in there:
        if path.is_dir() and not path.is_symlink():
            raise UsageError(f"{path} is a directory: add-node writes a file there; move it away, or give another "
                             "--tinc-dir")  # fmt: skip
    if not there or force:
        return tuple(path for path in there if path in planned)
    try:
        owner = tinc_conf_name(tinc_dir / "tinc.conf")
    except ConfigError:
        owner = None
    whose = f" (its tinc.conf says Name = {owner})" if owner else ""
    names = ", ".join(str(path.relative_to(tinc_dir)) for path in there)
    keys = " (the node's keys are lost)" if any(path.name in PRIVATE_KEY_FILES for path in there) else ""
    raise RefusedError(
        f"{tinc_dir} is already set up{whose}: it has {names}; add-node replaces nothing there without --force",
        hint=f"to set up {name} elsewhere, give another --tinc-dir DIR (or --net); --force replaces "
        f"{'it' if len(there) == 1 else 'them'}{keys}",
    )


def tinc_dir_of(net: str | None, tinc_dir: str | None) -> tuple[Path, str]:
    """The node's tinc directory and network name, from ``--net`` and/or
    ``--tinc-dir`` (tincd's default layout: ``/etc/tinc/NET``).  The name is
    taken from the directory only there: elsewhere a folder's name says
    nothing about the network (``/srv/nodes/hub``), and a wrong one would
    end up in the node's config, its file name and its units."""
    if tinc_dir is None and net is None:
        raise UsageError("give --net NET (tinc dir /etc/tinc/NET) or --tinc-dir DIR")
    # Absolute: the next steps and the node's config name it.
    directory = Path(tinc_dir).resolve() if tinc_dir else TINC_ROOT / str(net)
    if net is None and directory.parent != TINC_ROOT:
        raise UsageError(
            f"--tinc-dir {directory} is not under {TINC_ROOT}/, so its name need not be the network's: "
            "give --net NET too (the name in /etc/syncd/NET.yaml and tinc@NET)"
        )
    net = net or directory.name
    config_path(net)  # a valid network name, or a UsageError saying why
    return directory, net


def next_steps(node: NewNode, repo: Path) -> str:
    """What is left to do by hand once the files are written."""
    host = node.repo_host_file.path
    net = node.net
    return f"""
Next steps:
  1. In {repo}: git add {host.relative_to(repo) if host.is_relative_to(repo) else host}
{_join_step(node)}
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


def _join_step(node: NewNode) -> str:
    """Who must sign the commit that adds the node, by the policy's ``join``
    (docs/trust.md): every node refuses the commit signed by anyone else."""
    message = f'-m "Add {node.name}"'
    # Another person's key: its usual place on their machine, named, since
    # git signs with no key unless user.signingkey says which.
    theirs = f'git -c gpg.format=ssh -c user.signingkey="{THEIR_KEY}"'
    amend = f"{theirs} commit --amend --no-edit -S && git push"
    if not node.owners:
        rule = "" if node.join == "admins" else f" (join: {node.join} needs an owner line; give --owner-key FILE.pub)"
        return (
            f"     then commit it signed by an admin{rule} and push (their key, if not {THEIR_KEY}):\n"
            f"       {theirs} commit -S {message} && git push"
        )
    if node.join == "members":
        return (
            f"     then commit it:  git commit {message}\n"
            "     and ask an owner of an existing node (join: members) or an admin to sign it with their key\n"
            f"     (if not {THEIR_KEY}) and push, in their clone with your commit:\n       {amend}"
        )
    if node.join == "open":
        key = _signing_key(node.owners[0].source)
        return (
            "     then sign the commit with the owner key yourself (join: open) and push:\n"
            f"       git -c gpg.format=ssh -c user.signingkey={shlex.quote(str(key))} commit -S {message} && git push"
        )
    return (
        f"     then commit it:  git commit {message}\n"
        f"     and ask an admin to sign it (join: admins) with their key (if not {THEIR_KEY})\n"
        f"     and push, in their clone with your commit:\n       {amend}"
    )


def _signing_key(public: Path) -> Path:
    """git's ``user.signingkey``: the private key beside ``FILE.pub`` when
    there is one, else the public key (``ssh-keygen -Y sign`` then asks
    ssh-agent for its private half)."""
    private = public.with_suffix("") if public.suffix == ".pub" else public
    return private.resolve() if private != public and private.is_file() else public.resolve()


def _address_lines(address: str | None) -> list[str]:
    """``--address "HOST [PORT]"`` → the host file's ``Address`` (and ``Port``) lines."""
    if address is None:
        return []
    host, _, port = address.partition(" ")
    problem = host_problem(host)
    if problem is None and port and not (port.isdigit() and 1 <= int(port) <= 65535):
        problem = f"port {port!r} is not a number from 1 to 65535"
    if problem is not None:
        raise UsageError(f"--address: {problem}")
    return [f"Address = {address}", *([f"Port = {port}"] if port else [])]


def _check_new_host(tree: Snapshot, hosts_dir: str, name: str, host_bytes: bytes) -> tuple[Finding, ...]:
    """Refuse a host file (keys aside) that would not pass ``syncd check``;
    return the repository's other errors, which are not the new node's doing.

    The keys are checked apart: a fresh key pair of the policy's kinds and
    size is always valid and never anyone else's, so ``key-missing`` for the
    file without them is expected, and generating a key to learn nothing
    would make a dry run take seconds."""
    path = f"{hosts_dir}/{name}"
    trial, _ = check_tree(tree.with_entry(TreeEntry(name, EntryKind.FILE, len(host_bytes), host_bytes)))
    errors = [
        f for f in trial.findings if f.severity is Severity.ERROR and not (f.path == path and f.code == "key-missing")
    ]
    mine = [f for f in errors if f.path == path or any(r.path == path for r in f.related)]
    if mine:
        raise RefusedError(
            "\n".join(["the new host file would not pass syncd check:", *(f.format_text() for f in mine)]),
            reason=Reason.INVALID_CONTENT,
        )
    return tuple(f for f in errors if f not in mine)


def write(node: NewNode) -> list[Path]:
    """Write the planned files, all or (on any failure) none."""
    if node.dry_run:
        raise ValueError("a dry run's files hold placeholders for the keys: they are never written")
    return write_all(node.files)


def _subnet(requested: str, policy: Policy, report: Report) -> Subnet:
    if requested != "auto":
        try:
            subnet = parse_subnet(requested)
        except SubnetError as exc:
            raise RefusedError(f"--subnet: {exc.message}", reason=Reason.INVALID_CONTENT) from None
        return subnet
    if policy.allocate is not None:
        prefix, size = policy.allocate.prefix, policy.allocate.size
    elif policy.prefixes:
        prefix = policy.prefixes[0]
        size = default_size(prefix)
    else:
        raise UsageError(f"--subnet auto needs `prefixes` or `allocate` in {POLICY_FILE}; give --subnet CIDR")
    try:
        return next_free(prefix, size, claimed(policy, report.hosts, size))
    except AllocationError as exc:
        raise RefusedError(str(exc)) from None  # no free subnet left: Reason.REFUSED


def _default_connect_to(report: Report, own_address: str | None) -> tuple[str, ...]:
    """Every node others can reach (its host file has an Address); none for
    a node that is given an address itself (a gateway others connect to)."""
    if own_address is not None:
        return ()
    return tuple(sorted(name for name, host in report.hosts.items() if host.first("Address") is not None))


def _key_kinds(policy: Policy) -> list[str]:
    if policy.tinc == "1.1":
        return ["Ed25519", "RSA"] if policy.legacy_rsa else ["Ed25519"]
    return ["RSA"]


def _keypair(kind: str, rsa_bits: int) -> KeyPair:
    return ed25519_keypair() if kind == "Ed25519" else rsa_keypair(rsa_bits)


def _private_file(kind: str) -> str:
    return "ed25519_key.priv" if kind == "Ed25519" else "rsa_key.priv"


def _placeholder(kind: str, rsa_bits: int) -> KeyPair:
    what = f"RSA {rsa_bits}" if kind == "RSA" else kind
    return KeyPair(
        _private_file(kind),
        f"<generated at install: {what} private key>\n".encode(),
        f"<generated at install: {what} public key>\n",
    )


def _interface_address(subnet: Subnet, policy: Policy) -> str:
    """The node's own address, with the length of the network prefix that
    holds it (as in the classic guide's tinc-up: the LAN's first host, with
    the whole VPN's netmask, so the kernel routes the VPN to tinc).

    The address is the subnet's first host address that is a host address in
    that network too: never a network or broadcast address (an IPv4 network
    of more than two addresses), nor an IPv6 subnet-router anycast address
    (all host bits zero, RFC 4291 2.6.1)."""
    if subnet.kind is Kind.MAC:
        raise UsageError(f"--subnet {format_subnet(subnet)}: a MAC address; add-node sets up an IP node")
    network = next((p for p in policy.prefixes if p.contains(subnet)), None)
    if network is None and policy.allocate is not None and policy.allocate.prefix.contains(subnet):
        network = policy.allocate.prefix
    network = network or subnet
    unusable = {*reserved(subnet), *reserved(network)}
    value = next((v for v in range(subnet.first, min(subnet.last, subnet.first + 1) + 1) if v not in unusable), None)
    if value is None:
        if subnet.kind is Kind.IPV6:
            what = "subnet-router anycast"
        else:
            what = "broadcast" if subnet.first == network.last else "network"
        raise RefusedError(
            f"{format_subnet(subnet)} is the {what} address of {format_subnet(network)}, not a host's: "
            "give the node another address",
            reason=Reason.INVALID_CONTENT,
        )
    text = str(ipaddress.IPv6Address(value) if subnet.kind is Kind.IPV6 else ipaddress.IPv4Address(value))
    return f"{text}/{network.prefixlen}"
