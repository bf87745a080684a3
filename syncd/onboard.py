"""``syncd add-node``: everything the classic tinc guide does by hand to add
a node, checked against the hosts repository first.

It prepares the whole result in memory (``prepare``): name, subnet, keys,
host file, ``tinc.conf``, ``tinc-up``/``tinc-down``; validates the network
with the new host file exactly as ``syncd check`` would; and only then
writes (``write``).  Any refusal leaves no file behind anywhere.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from syncd.allocate import AllocationError, default_size, next_free
from syncd.errors import RefusedError, UsageError
from syncd.findings import Finding, Severity
from syncd.hostfile import NAME_RE, host_problem
from syncd.keygen import KeyPair, ed25519_keypair, rsa_keypair
from syncd.policy import POLICY_FILE, Policy, parse_policy
from syncd.subnet import Kind, Subnet, SubnetError, format_subnet, parse_subnet
from syncd.validate import EntryKind, Report, TreeEntry, validate_network
from syncd.worktree import read_hosts_dir, read_policy

PRIVATE_KEY_FILES = ("rsa_key.priv", "ed25519_key.priv")


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    data: bytes
    mode: int
    secret: bool = False


@dataclass(frozen=True)
class NewNode:
    name: str
    net: str
    tinc_dir: Path
    subnet: Subnet
    vpn_address: str  # "2002:102:304:6::1/48": the interface address tinc-up sets
    connect_to: tuple[str, ...]
    files: tuple[PlannedFile, ...]
    warnings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def host_file(self) -> PlannedFile:
        return next(f for f in self.files if f.path.parent.name == "hosts" and f.path.name == self.name)


def prepare(
    name: str,
    *,
    repo: Path,
    tinc_dir: Path,
    net: str,
    subnet: str = "auto",
    address: str | None = None,
    connect_to: tuple[str, ...] = (),
    force: bool = False,
    rsa_bits: int = 4096,
) -> NewNode:
    if not NAME_RE.match(name):
        raise RefusedError(f"{name!r} is not a valid tinc node name (1-64 of A-Z, a-z, 0-9, _)", reason="name")
    policy, policy_findings = _policy(repo)
    if any(f.severity is Severity.ERROR for f in policy_findings):
        raise RefusedError(
            f"{repo / POLICY_FILE} has errors: " + "; ".join(f.format_text() for f in policy_findings),
            reason="policy",
        )
    hosts_path = repo / policy.hosts_dir
    entries = read_hosts_dir(hosts_path, policy.max_file_bytes)
    report = validate_network(policy, entries, policy.hosts_dir, policy_findings)
    clash = [e.name for e in entries if e.name.lower() == name.lower()]
    if clash:
        raise RefusedError(
            f"{policy.hosts_dir}/{clash[0]} already exists: node names must be unique (any case)", "name"
        )
    existing_keys = [f for f in PRIVATE_KEY_FILES if (tinc_dir / f).exists()]
    if existing_keys and not force:
        raise RefusedError(
            f"{tinc_dir} already has {', '.join(existing_keys)}: refusing to replace a node's keys "
            "(use --force to start over)",
            reason="exists",
        )

    chosen = _subnet(subnet, policy, report)
    port: str | None = None
    if address is not None:
        host, _, port_text = address.partition(" ")
        problem = host_problem(host)
        if problem is None and port_text and not (port_text.isdigit() and 1 <= int(port_text) <= 65535):
            problem = f"port {port_text!r} is not a number from 1 to 65535"
        if problem is not None:
            raise UsageError(f"--address: {problem}")
        port = port_text or None
    peers = connect_to if connect_to else _default_connect_to(report, address)
    for peer in peers:
        if peer not in report.hosts:
            raise UsageError(f"--connect-to: {peer!r} has no host file in {hosts_path}")

    keys = _keys(policy, rsa_bits)
    host_lines = []
    if address is not None:
        host_lines.append(f"Address = {address}")
        if port is not None:
            host_lines.append(f"Port = {port}")
    host_lines.append(f"Subnet = {format_subnet(chosen)}")
    host_text = "\n".join(host_lines) + "\n" + "".join(f"\n{k.public_text}" for k in keys)
    host_bytes = host_text.encode()

    # The network with the new host file must pass `syncd check` for it.
    path = f"{policy.hosts_dir}/{name}"
    trial = validate_network(
        policy,
        [*entries, TreeEntry(name, EntryKind.FILE, len(host_bytes), host_bytes)],
        policy.hosts_dir,
        policy_findings,
    )
    mine = [
        f
        for f in trial.findings
        if f.severity is Severity.ERROR and (f.path == path or any(r.path == path for r in f.related))
    ]
    if mine:
        raise RefusedError(
            "the new host file would not pass syncd check: " + "; ".join(f.format_text() for f in mine),
            reason="invalid-content",
        )
    others = tuple(f for f in trial.findings if f.severity is Severity.ERROR and f not in mine)

    vpn_address = _interface_address(chosen, policy)
    default_route = any(s.prefixlen == 0 and s.kind == chosen.kind for h in report.hosts.values() for s, _ in h.subnets)
    files = [
        PlannedFile(tinc_dir / "tinc.conf", _tinc_conf(name, peers).encode(), 0o644),
        PlannedFile(tinc_dir / "hosts" / name, host_bytes, 0o644),
        PlannedFile(tinc_dir / "tinc-up", _tinc_up(chosen, vpn_address, default_route and not address).encode(), 0o755),
        PlannedFile(
            tinc_dir / "tinc-down", _tinc_down(chosen, vpn_address, default_route and not address).encode(), 0o755
        ),
        *(PlannedFile(tinc_dir / k.private_file, k.private_pem, 0o600, secret=True) for k in keys),
        PlannedFile(hosts_path / name, host_bytes, 0o644),
    ]
    return NewNode(name, net, tinc_dir, chosen, vpn_address, tuple(peers), tuple(files), others)


def write(node: NewNode) -> list[Path]:
    """Write the planned files; on any failure, remove what was written."""
    written: list[Path] = []
    try:
        for planned in node.files:
            planned.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(
                planned.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, planned.mode
            )
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), planned.mode)
                fh.write(planned.data)
            written.append(planned.path)
    except OSError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _policy(repo: Path) -> tuple[Policy, list[Finding]]:
    if not repo.is_dir():
        raise UsageError(f"{repo}: no such directory (--repo is a working clone of the hosts repository)")
    data = read_policy(repo)
    if data is None:
        return Policy(), []
    return parse_policy(data)


def _subnet(requested: str, policy: Policy, report: Report) -> Subnet:
    if requested != "auto":
        try:
            subnet = parse_subnet(requested)
        except SubnetError as exc:
            raise RefusedError(f"--subnet: {exc.message}", reason=exc.code) from None
        return subnet
    if policy.allocate is not None:
        prefix, size = policy.allocate.prefix, policy.allocate.size
    elif policy.prefixes:
        prefix = policy.prefixes[0]
        size = default_size(prefix)
    else:
        raise UsageError(f"--subnet auto needs `prefixes` or `allocate` in {POLICY_FILE}; give --subnet CIDR")
    taken = [
        s
        for node, host in report.hosts.items()
        for s, _ in host.subnets
        if not (s.prefixlen < size and (policy.is_route(node, s) or policy.shared_entry(node, s) is not None))
    ]
    try:
        return next_free(prefix, size, taken)
    except AllocationError as exc:
        raise RefusedError(str(exc), reason="exhausted") from None


def _default_connect_to(report: Report, own_address: str | None) -> tuple[str, ...]:
    """Every node others can reach (its host file has an Address); none for
    a node that is given an address itself (a gateway others connect to)."""
    if own_address is not None:
        return ()
    return tuple(sorted(name for name, host in report.hosts.items() if host.first("Address") is not None))


def _keys(policy: Policy, rsa_bits: int) -> list[KeyPair]:
    if policy.tinc == "1.1":
        keys = [ed25519_keypair()]
        if policy.legacy_rsa:
            keys.append(rsa_keypair(rsa_bits))
        return keys
    return [rsa_keypair(rsa_bits)]


def _interface_address(subnet: Subnet, policy: Policy) -> str:
    """The node's own address: the first host address of its subnet, with the
    length of the network prefix that holds it (as in the seed's tinc-up)."""
    offset = 1 if subnet.prefixlen < subnet.bits else 0
    value = subnet.first + offset
    text = str(ipaddress.IPv6Address(value) if subnet.kind is Kind.IPV6 else ipaddress.IPv4Address(value))
    length = next((p.prefixlen for p in policy.prefixes if p.contains(subnet)), subnet.prefixlen)
    return f"{text}/{length}"


def _tinc_conf(name: str, peers: tuple[str, ...]) -> str:
    # StrictSubnets: the host files syncd installs, signed, decide who routes what
    lines = [f"Name = {name}", "AddressFamily = ipv4", "StrictSubnets = yes", *(f"ConnectTo = {p}" for p in peers)]
    return "\n".join(lines) + "\n"


def _family(subnet: Subnet) -> str:
    return "-6" if subnet.kind is Kind.IPV6 else "-4"


def _tinc_up(subnet: Subnet, address: str, default_route: bool) -> str:
    family = _family(subnet)
    lines = [
        "#!/bin/sh",
        f'ip {family} link set "$INTERFACE" up mtu 1400',
        f'ip {family} addr add {shlex.quote(address)} dev "$INTERFACE"',
    ]
    if default_route:
        lines.append(f'ip {family} route add default dev "$INTERFACE"')
    return "\n".join(lines) + "\n"


def _tinc_down(subnet: Subnet, address: str, default_route: bool) -> str:
    family = _family(subnet)
    lines = ["#!/bin/sh"]
    if default_route:
        lines.append(f'ip {family} route del default dev "$INTERFACE"')
    lines += [
        f'ip {family} addr del {shlex.quote(address)} dev "$INTERFACE"',
        f'ip {family} link set "$INTERFACE" down',
    ]
    return "\n".join(lines) + "\n"
