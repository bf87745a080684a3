"""A whole network (policy + host-file entries) → sorted findings (pure).

The validator takes names and bytes, never paths on disk: a working tree and
a git commit both hand out ``TreeEntry`` values (``tree.TreeSource``), so
``syncd check``, ``add-node`` and the agent run this one check.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from syncd.findings import Finding, Location, Severity, error
from syncd.rules.owners import parse_owners
from syncd.rules.policy import DEFAULT_POLICY, POLICY_FILE, Policy, policy_of
from syncd.rules.tree import EntryKind, TreeEntry, TreeSource
from syncd.tinc.hostfile import HostFile, parse_host_file
from syncd.tinc.names import NAME_RULE, SCRIPT_SUFFIXES, is_node_name, is_script_name, script_suffix
from syncd.tinc.overlap import Claim, Claims
from syncd.tinc.subnet import Kind, Subnet, format_subnet


@dataclass(frozen=True, slots=True)
class Report:
    findings: tuple[Finding, ...]
    hosts: Mapping[str, HostFile]  # the valid nodes, by name
    subnets: int
    policy: Policy = DEFAULT_POLICY  # the policy the tree was checked under
    policy_findings: tuple[Finding, ...] = ()  # those of its syncd.yaml alone (also in findings)

    @property
    def nodes(self) -> int:
        return len(self.hosts)

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.WARNING)

    def failed(self, strict: bool = False) -> bool:
        return self.errors > 0 or (strict and self.warnings > 0)


def is_ignored(name: str) -> bool:
    """Dot files (``.gitkeep``, ``.gitattributes``) are repository plumbing,
    never host files; tincd skips them too."""
    return name.startswith(".")


class Located(Protocol):
    """What the findings across files read of a node: where its file is."""

    @property
    def path(self) -> str: ...


# (path, blob id or bytes, tinc version, min_rsa_bits) → the parsed file
CacheKey = tuple[str, bytes | str, str, int]


class ParseCache(dict[CacheKey, HostFile]):
    """Parsed host files by ``CacheKey``, kept by a caller that validates
    tree after tree (the agent); and the last tree's checks across files
    (an ``incremental.Network``), from which the next tree, when it differs
    only in some host files, is validated by updating them."""

    network: Any = None


def validate_network(
    policy: Policy,
    entries: Iterable[TreeEntry],
    hosts_dir: str,
    policy_findings: Iterable[Finding] = (),
    cache: dict[CacheKey, HostFile] | None = None,
    installed: bool = False,
    lean: bool = False,
) -> Report:
    """``cache`` maps (path, blob id or bytes, tinc version, min_rsa_bits) to
    the parsed file: parsing is deterministic, so an unchanged host file is
    not parsed again (an entry found there needs no ``data``).  Only the
    current files are kept in it.

    ``installed``: the entries are a node's own hosts directory
    (``check --hosts-dir``), where ``NAME-up`` / ``NAME-down`` scripts are the
    operator's own business rather than something a repository may carry.

    ``lean``: of each host file keep only its path and owners (the checks
    across files keep their own compact copy of the subnets and keys), for
    a caller that wants the findings alone (``syncd check`` of 100k nodes)."""
    own_findings = tuple(policy_findings)
    findings: list[Finding] = list(own_findings)
    fresh: dict[CacheKey, HostFile] | None = {} if cache is not None else None
    hosts: dict[str, HostFile] = {}
    prefix = f"{hosts_dir.rstrip('/')}/" if hosts_dir else ""
    claims = Claims()  # the policy's prefixes, then every node's subnets
    for subnet in policy.prefixes:
        claims.add(subnet, "", 0)
    holders = _KeyHolders()

    for entry in entries:
        if is_ignored(entry.name):
            continue
        path = prefix + entry.name
        key = (path, entry.blob or entry.data or b"", policy.tinc, policy.min_rsa_bits)
        result = check_entry(entry, path, policy, cache.get(key) if cache is not None else None, installed)
        if not isinstance(result, HostFile):
            findings.extend(result)
            continue
        host = result
        if fresh is not None:
            fresh[key] = host
        hosts[entry.name] = host
        findings.extend(host.findings)
        _gather(entry.name, host, claims, holders, lean)

    if cache is not None and fresh is not None:
        cache.clear()
        cache.update(fresh)
    findings.extend(_name_collisions(hosts))
    findings.extend(policy_mentions(policy, hosts))
    findings.extend(_subnet_findings(policy, hosts, claims))
    findings.extend(holders.findings(hosts))
    findings.sort(key=finding_order)
    return Report(tuple(findings), hosts, len(claims) - len(policy.prefixes), policy, own_findings)


def check_entry(
    entry: TreeEntry, path: str, policy: Policy, cached: HostFile | None, installed: bool
) -> HostFile | tuple[Finding, ...]:
    """One entry of a hosts directory on its own: its parsed host file
    (``cached`` when the cache had it), or the finding that keeps it from
    being one (none for the scripts of an installed directory)."""
    if entry.kind is not EntryKind.FILE:
        return (error(path, 1, "file-type", _file_type_message(entry.kind)),)
    if not is_node_name(entry.name):
        if installed and is_script_name(entry.name):
            return ()
        return (error(path, 1, "name-invalid", _name_message(entry.name)),)
    if entry.size > policy.max_file_bytes or (cached is None and entry.data is None):
        too_large = f"{entry.size} bytes, over the policy's max_file_bytes ({policy.max_file_bytes})"
        return (error(path, 1, "file-too-large", too_large),)
    if cached is not None:
        return cached
    assert entry.data is not None
    host = parse_host_file(path, entry.data, tinc=policy.tinc, min_rsa_bits=policy.min_rsa_bits)
    # owner lines (# syncd-owner:) are comments to tincd: their
    # findings travel with the file's own, in every cache
    owners = parse_owners(path, entry.data)
    if owners.owners or owners.findings:
        host.findings.extend(owners.findings)
        host.owners = tuple((o.key, o.comment) for o in owners.owners)
    return host


def check_tree(
    source: TreeSource,
    *,
    installed: bool = False,
    parse_cache: dict[CacheKey, HostFile] | None = None,
    lean: bool = False,
) -> tuple[Report, dict[str, bytes]]:
    """Validate a tree under its own policy: the report, and the host files
    of its valid nodes (name → bytes), which are what a node installs.

    Error findings raise nothing: ``syncd check`` prints them, ``add-node``
    and the agent refuse.  Errors of the source itself (an unreadable
    directory, an unsafe git tree) propagate.

    ``installed``: the source is a node's own hosts directory, where tinc's
    ``NAME-up`` / ``NAME-down`` scripts are the operator's business; its
    findings are named under ``source.label``, the directory itself.

    ``lean``: the report is for its findings alone (``validate_network``),
    and no host file is returned: each file's bytes are let go once parsed.
    """
    policy, policy_findings = policy_of(source.policy_bytes())
    entries = source.host_entries(policy.hosts_dir, policy.max_files, policy.max_file_bytes)
    shown = source.label if installed else policy.hosts_dir
    if lean:
        entries.reverse()
        drained = (entries.pop() for _ in range(len(entries)))  # in order, each let go after its turn
        return validate_network(policy, drained, shown, policy_findings, None, installed, lean=True), {}
    report = validate_network(policy, entries, shown, policy_findings, parse_cache, installed)
    desired = {e.name: e.data for e in entries if e.data is not None and e.name in report.hosts}
    return report, desired


def _file_type_message(kind: EntryKind) -> str:
    return {
        EntryKind.SYMLINK: "a symlink: syncd installs only regular files (a link could point anywhere on the node)",
        EntryKind.DIRECTORY: "a directory inside the hosts directory; host files are plain files",
        EntryKind.SUBMODULE: "a git submodule inside the hosts directory; host files are plain files",
        EntryKind.OTHER: "not a regular file",
    }[kind]


def _name_message(name: str) -> str:
    suffix = script_suffix(name)
    if suffix is not None:
        return (
            f"{name!r} is a tinc script name: tincd runs hosts/{name} as root when the node "
            f"{SCRIPT_SUFFIXES[suffix]}; syncd never installs scripts"
        )
    return f"{name!r} is not a valid tinc node name ({NAME_RULE}); tincd ignores this file"


def finding_order(finding: Finding) -> tuple[str, int, str, str, str, tuple[Location, ...]]:
    """The order of a report's findings: by file, line, code and message,
    then (for the rare two that agree on all four) severity and related
    places, so that the order never depends on the order they were found in."""
    return (*finding.sort_key(), finding.severity, finding.related)


def _name_collisions(hosts: Mapping[str, HostFile]) -> Iterable[Finding]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name in hosts:
        groups[name.lower()].append(name)
    for names in groups.values():
        yield from collision_findings(names, hosts)


def collision_findings(names: list[str], hosts: Mapping[str, Located]) -> Iterable[Finding]:
    """The findings of the host files whose names differ only in case (one group)."""
    if len(names) >= 2:
        for name in names:
            others = sorted(n for n in names if n != name)
            yield error(
                hosts[name].path,
                1,
                "name-collision",
                f"{name!r} differs from {', '.join(map(repr, others))} only in case; they clash on "
                "case-insensitive file systems",
                tuple(Location(hosts[n].path, 1) for n in others),
            )


def policy_mentions(policy: Policy, hosts: Mapping[str, Located]) -> Iterable[Finding]:
    for node, key, line in policy.node_mentions:
        if node not in hosts:
            yield error(POLICY_FILE, line, "policy-invalid", f"{key}: names {node!r}, which has no host file")


def overlap_allowed(policy: Policy, outer: Claim, inner: Claim) -> bool:
    if outer.subnet.network == inner.subnet.network:
        # Identical subnets cover each other: both sides must be declared.
        return (policy.is_route(outer.node, outer.subnet) and policy.is_route(inner.node, inner.subnet)) or (
            policy.shared_entry(outer.node, outer.subnet) is not None
            and policy.shared_entry(inner.node, inner.subnet) is not None
        )
    return policy.is_route(outer.node, outer.subnet) or policy.shared_entry(outer.node, outer.subnet) is not None


def _subnet_findings(policy: Policy, hosts: Mapping[str, HostFile], claims: Claims) -> Iterable[Finding]:
    """Overlaps between nodes and subnets outside the prefixes, in one sweep.

    The policy's prefixes are the first claims, of the node "" (which sorts
    before every real name): a claim with such an ancestor lies inside a
    prefix.
    """
    prefixes = len(policy.prefixes)
    inside = bytearray(len(claims))  # 1: the claim lies inside a prefix
    for outer, inner in claims.pairs():
        if inner < prefixes:
            continue  # a prefix inside some node's subnet (a default route, say)
        if outer < prefixes:
            inside[inner] = 1
            continue
        outer_claim, inner_claim = claims.claim(outer), claims.claim(inner)
        if not overlap_allowed(policy, outer_claim, inner_claim):
            yield from overlap_findings(hosts, outer_claim, inner_claim)
    if not prefixes:
        return
    for index in range(prefixes, len(claims)):
        if inside[index] or claims.kinds[index] == Kind.MAC:
            continue
        claim = claims.claim(index)
        if not policy.is_route(claim.node, claim.subnet):
            yield outside_finding(policy, hosts[claim.node].path, claim.subnet, claim.line)


def outside_finding(policy: Policy, path: str, subnet: Subnet, line: int) -> Finding:
    """A subnet that lies in none of the policy's prefixes, and is no route."""
    allowed = ", ".join(format_subnet(p) for p in policy.prefixes)
    return error(
        path,
        line,
        "subnet-outside-prefix",
        f"{format_subnet(subnet)} lies outside the network's prefixes ({allowed}); "
        "list it under routes in syncd.yaml if this node routes it on purpose",
    )


def overlap_findings(hosts: Mapping[str, Located], outer: Claim, inner: Claim) -> tuple[Finding, Finding]:
    """One finding on each file: either one may be the mistake (the new
    file that claims a gateway's subnet, or the new aggregate that covers
    old nodes), and an annotation on only one would blame the wrong file
    half the time.  Each names the other."""
    inner_at = Location(hosts[inner.node].path, inner.line)
    outer_at = Location(hosts[outer.node].path, outer.line)
    inner_text, outer_text = format_subnet(inner.subnet), format_subnet(outer.subnet)
    if outer.subnet.network == inner.subnet.network:
        hint = "list it under shared in syncd.yaml if both announce it on purpose"
        on_inner = f"{inner_text} is also announced by node {outer.node} ({outer_at.path}:{outer_at.line}); {hint}"
        on_outer = f"{outer_text} is also announced by node {inner.node} ({inner_at.path}:{inner_at.line}); {hint}"
    else:
        hint = (
            f"the more specific subnet wins in tinc; list {outer_text} under routes for "
            f"{outer.node} in syncd.yaml if it is an intended route"
        )
        on_inner = f"{inner_text} overlaps {outer_text} of node {outer.node} ({outer_at.path}:{outer_at.line}); {hint}"
        on_outer = f"{outer_text} covers {inner_text} of node {inner.node} ({inner_at.path}:{inner_at.line}); {hint}"
    return (
        error(inner_at.path, inner_at.line, "subnet-overlap", on_inner, (outer_at,)),
        error(outer_at.path, outer_at.line, "subnet-overlap", on_outer, (inner_at,)),
    )


def _gather(name: str, host: HostFile, claims: Claims, holders: _KeyHolders, lean: bool) -> None:
    """Copy what the checks across files read of one host file into their
    compact records; for a lean report, let the file's own copies go."""
    for subnet, line in host.subnets:
        claims.add(subnet, name, line)
    for public_key, line in host.keys:
        holders.add(public_key.identity, name, line)
    if lean:
        host.firsts, host.pem_blocks = {}, []
        host.subnets = host.keys = host.findings = _LET_GO


_LET_GO: list[Any] = []  # a lean report's hosts share this empty list (never appended to)


class _KeyHolders:
    """Which nodes hold each public key (by its identity), gathered file by
    file: the first holder of a key in one dict, the rare key held twice or
    more in another."""

    __slots__ = ("first", "shared")

    def __init__(self) -> None:
        self.first: dict[bytes, tuple[str, int]] = {}
        self.shared: dict[bytes, list[tuple[str, int]]] = {}

    def add(self, identity: bytes, name: str, line: int) -> None:
        place = (name, line)
        first = self.first.setdefault(identity, place)
        if first is not place:
            self.shared.setdefault(identity, [first]).append(place)

    def findings(self, hosts: Mapping[str, HostFile]) -> Iterable[Finding]:
        for places in self.shared.values():
            yield from key_findings(places, hosts)


def key_findings(places: list[tuple[str, int]], hosts: Mapping[str, Located]) -> Iterable[Finding]:
    """The findings of one public key held by several nodes, at ``places``
    (node, line) in the order of the files, then of their lines."""
    nodes = sorted({name for name, _ in places})
    if len(nodes) < 2:
        return
    for name, line in places:
        others = [n for n in nodes if n != name]
        related = tuple(Location(hosts[n].path, ln) for n, ln in places if n != name)
        yield error(
            hosts[name].path,
            line,
            "key-duplicate",
            f"the same public key is used by {', '.join([name, *others])}: each node needs its own key pair",
            related,
        )
