"""Validation whose cost follows the change: a tree that differs from the
last validated one only in some host files is validated by updating that
tree's results for those files, not by checking every file again.

``validate.validate_network`` is the definition.  A ``Network`` holds what
it found, split by what each part depends on, so that the part of a changed
file can be taken out and put back:

* a file's own findings (its type, name and size, its parse, and its subnets
  outside the policy's prefixes) depend on that file alone;
* an overlap depends on its two claims alone: kept per pair of claims, and
  found for a changed claim in a sorted list of (network, prefix length)
  keys, where the prefixes that contain it are one lookup per prefix length
  in use and the prefixes it contains are one range;
* a duplicate key's findings depend on the files that hold that key: kept
  per key, found again for each key a changed file held or holds;
* a name collision's findings depend on the names equal but for case: kept
  per lower-case name, found again for each changed name;
* the policy's mentions of nodes are found again whole (as many as the
  policy's lines).

All of it depends on the policy, so a ``Network`` serves only the context
(the policy's bytes and the hosts directory) it was built in; the findings
are sorted in one total order (``validate.finding_order``), so the order in
which they were found never shows.  The hosts directory must list its
entries once each and in order of name, as git writes trees: the duplicate
keys' places are in the order of the files.  Anything else, and the full
check runs (``sync.content`` decides).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import pairwise
from typing import cast

from syncd.findings import Finding
from syncd.rules.policy import Policy
from syncd.rules.tree import EntryKind, TreeEntry
from syncd.rules.validate import (
    CacheKey,
    Report,
    check_entry,
    collision_findings,
    finding_order,
    is_ignored,
    key_findings,
    outside_finding,
    overlap_allowed,
    overlap_findings,
    policy_mentions,
)
from syncd.tinc.hostfile import HostFile
from syncd.tinc.overlap import Claim
from syncd.tinc.subnet import BITS, Kind, Subnet

_ID_BITS = 40  # a claim's number, in the low bits of its key
_ID_MASK = (1 << _ID_BITS) - 1

Signature = tuple[str, str | None, int]  # what a file's own findings depend on: kind, blob id, size
Plain = tuple[int, int, int, int]  # a Subnet's fields: kind, address, prefix length, weight


class Indexed:
    """A valid node of a network read back from the parse index file
    (``Network.restore``): where its file is; its ``HostFile`` is rebuilt
    from the index's record when a report is asked for it."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class Network:
    """The last validated tree's findings, by what each depends on."""

    def __init__(self, context: tuple[object, ...], policy: Policy, prefix: str) -> None:
        self.context, self.policy, self.prefix = context, policy, prefix
        self.signatures: dict[str, Signature] = {}
        self.hosts: dict[str, HostFile | Indexed] = {}
        self.indexed = 0  # how many of them are Indexed
        self.identities: dict[str, tuple[bytes, ...]] = {}  # the keys each valid node holds
        self.own: dict[str, tuple[Finding, ...]] = {}  # only the files that have some
        # claims: per family the sorted keys (network << 8 | prefix length) << _ID_BITS | number
        self.keys: tuple[list[int], list[int], list[int]] = ([], [], [])
        self.lengths: tuple[dict[int, int], dict[int, int], dict[int, int]] = ({}, {}, {})  # in use: how many
        self.claims: dict[int, tuple[str, int, Plain, int]] = {}  # number → node, line, subnet, key
        self.by_node: dict[str, list[int]] = {}
        self.numbered = 0
        self.overlaps: dict[tuple[int, int], tuple[Finding, Finding]] = {}  # only the pairs not allowed
        self.pairs: dict[int, list[tuple[int, int]]] = {}  # claim → its keys in ``overlaps``
        self.holders: dict[bytes, list[tuple[str, int, int]]] = {}  # key → (node, index in file, line)
        self.duplicates: dict[bytes, tuple[Finding, ...]] = {}
        self.groups: dict[str, list[str]] = {}  # lower-case name → the valid nodes
        self.collisions: dict[str, tuple[Finding, ...]] = {}
        # the HostFile of an Indexed node's file, by name and blob id
        self.indexed_file: Callable[[str, str], HostFile] = _nothing_indexed
        self.sizes: dict[str, int] = {}  # blob id → size, of the files seen (``host_entries`` reads no header)
        self.unsaved = 0  # files changed since the parse index was saved (``sync.content``)

    @classmethod
    def of(
        cls, context: tuple[object, ...], policy: Policy, prefix: str, entries: Sequence[TreeEntry], report: Report
    ) -> Network | None:
        """The network of ``report``, the full check of ``entries`` (under
        ``policy``, the files named under ``prefix``); None when its hosts
        directory is not one ``update`` can follow."""
        if _names(entries) is None:
            return None
        network = cls(context, policy, prefix)
        keys: set[bytes] = set()
        for entry in entries:
            if is_ignored(entry.name):
                continue
            host = report.hosts.get(entry.name)
            result = host if host is not None else check_entry(entry, prefix + entry.name, policy, None, False)
            if isinstance(result, HostFile) and host is None:
                return None  # a host file the report does not have: not the report of these entries
            network._put(entry, result, keys, sort=False)
        for kind, family in enumerate(network.keys):
            family.sort()
            network._sweep(family, BITS[kind])
        network._settle(keys, set(network.groups))
        return network

    def _rebuild(self, name: str) -> HostFile:
        return self.indexed_file(name, self.signatures[name][1] or "")

    def update(
        self,
        context: tuple[object, ...],
        policy: Policy,
        policy_findings: tuple[Finding, ...],
        entries: list[TreeEntry],
        cache: dict[CacheKey, HostFile],
        fill: Callable[[TreeEntry], TreeEntry] | None = None,
    ) -> Report | None:
        """The report of ``entries``, exactly as ``validate_network`` would
        give it, with this network brought to them; None (and this network
        unusable) when they are not a tree this network can follow.  A
        changed file must carry its bytes unless ``cache`` has it: ``fill``
        gives them, in ``entries`` too.  ``cache`` is kept as
        ``validate_network`` keeps it."""
        names = _names(entries) if context == self.context else None
        if names is None:
            return None
        signatures = self.signatures
        changed = [
            i
            for i, e in enumerate(entries)
            if signatures.get(e.name) != (e.kind, e.blob, e.size) and not is_ignored(e.name)
        ]
        added = sum(1 for i in changed if entries[i].name not in signatures)
        gone: list[str] = []
        if len(names) - added < len(signatures):  # some names are no longer there
            present = set(names)
            gone = [name for name in signatures if name not in present]
        self.policy = policy
        keys: set[bytes] = set()
        groups: set[str] = set()
        for name in [*gone, *(entries[i].name for i in changed if entries[i].name in signatures)]:
            cache.pop(self._key(name, signatures[name][1]), None)
            self._take(name, keys, groups)
        numbers: list[int] = []
        for i in changed:
            entry = entries[i]
            key = self._key(entry.name, entry.blob)
            cached = cache.get(key)
            if cached is None and fill is not None:
                entry = entries[i] = fill(entry)
            result = check_entry(entry, key[0], policy, cached, False)
            if isinstance(result, HostFile):
                cache[key] = result
                groups.add(entry.name.lower())
            else:
                cache.pop(key, None)
            numbers += self._put(entry, result, keys, sort=True)
        for number in numbers:
            for other in (*self._containing(number), *self._contained(number)):
                self._pair(other, number)
        self._settle(keys, groups)
        self.unsaved += len(changed) + len(gone)
        if len(self.sizes) > 2 * len(signatures) + 64:  # blobs of files long gone
            self.sizes = {blob: size for _, blob, size in signatures.values() if blob is not None}
        return self.report(names, policy_findings)

    def report(self, names: list[str], policy_findings: tuple[Finding, ...]) -> Report:
        findings = list(policy_findings)
        for parts in (self.own, self.collisions, self.overlaps, self.duplicates):
            for found in parts.values():
                findings.extend(found)
        findings.extend(policy_mentions(self.policy, self.hosts))
        findings.sort(key=finding_order)
        hosts = {name: self.hosts[name] for name in names if name in self.hosts}  # in the tree's order
        shown = _Rebuilt(hosts, self._rebuild) if self.indexed else cast("dict[str, HostFile]", hosts)
        return Report(tuple(findings), shown, len(self.claims), self.policy, policy_findings)

    def _key(self, name: str, blob: str | None) -> CacheKey:
        return (self.prefix + name, blob or b"", self.policy.tinc, self.policy.min_rsa_bits)

    def _put(self, entry: TreeEntry, result: HostFile | tuple[Finding, ...], keys: set[bytes], sort: bool) -> list[int]:
        """Add one file's part; its claims' numbers."""
        name = entry.name
        self.signatures[name] = (entry.kind.value, entry.blob, entry.size)
        if entry.blob is not None:
            self.sizes[entry.blob] = entry.size
        if not isinstance(result, HostFile):
            if result:
                self.own[name] = result
            return []
        self.hosts[name] = result
        own = list(result.findings)
        policy = self.policy
        numbers = []
        for subnet, line in result.subnets:
            kind, address, prefixlen, _ = subnet
            number = self.numbered
            self.numbered += 1
            key = (address << 8 | prefixlen) << _ID_BITS | number
            self.claims[number] = (name, line, (int(kind), address, prefixlen, subnet.weight), key)
            numbers.append(number)
            lengths = self.lengths[kind]
            lengths[prefixlen] = lengths.get(prefixlen, 0) + 1
            if sort:
                insort(self.keys[kind], key)
            else:
                self.keys[kind].append(key)
            outside = policy.prefixes and kind != Kind.MAC and not _inside(policy.prefixes, subnet)
            if outside and not policy.is_route(name, subnet):
                own.append(outside_finding(policy, result.path, subnet, line))
        self.by_node[name] = numbers
        for index, (public_key, line) in enumerate(result.keys):
            insort(self.holders.setdefault(public_key.identity, []), (name, index, line))
            keys.add(public_key.identity)
        self.identities[name] = tuple(public_key.identity for public_key, _ in result.keys)
        self.groups.setdefault(name.lower(), []).append(name)
        if own:
            self.own[name] = tuple(own)
        return numbers

    def _take(self, name: str, keys: set[bytes], groups: set[str]) -> None:
        """Take one file's part out."""
        del self.signatures[name]
        self.own.pop(name, None)
        host = self.hosts.pop(name, None)
        if host is None:
            return
        self.indexed -= isinstance(host, Indexed)
        for number in self.by_node.pop(name):
            _, _, (kind, _, prefixlen, _), key = self.claims.pop(number)
            family = self.keys[kind]
            del family[bisect_left(family, key)]
            lengths = self.lengths[kind]
            lengths[prefixlen] -= 1
            if not lengths[prefixlen]:
                del lengths[prefixlen]
            for pair in self.pairs.pop(number, ()):
                del self.overlaps[pair]
                other = pair[0] if pair[1] == number else pair[1]
                self.pairs[other].remove(pair)
        for identity in self.identities.pop(name):
            places = [place for place in self.holders.get(identity, ()) if place[0] != name]
            if places:
                self.holders[identity] = places
            else:
                self.holders.pop(identity, None)
            keys.add(identity)
        lower = name.lower()
        group = self.groups[lower]
        group.remove(name)
        if not group:
            del self.groups[lower]
        groups.add(lower)

    def _settle(self, keys: set[bytes], groups: set[str]) -> None:
        """Find again the findings of these keys and lower-case names."""
        for identity in keys:
            places = self.holders.get(identity, [])
            found = tuple(key_findings([(node, line) for node, _, line in places], self.hosts))
            if found:
                self.duplicates[identity] = found
            else:
                self.duplicates.pop(identity, None)
        for lower in groups:
            found = tuple(collision_findings(self.groups.get(lower, []), self.hosts))
            if found:
                self.collisions[lower] = found
            else:
                self.collisions.pop(lower, None)

    def _sweep(self, family: list[int], bits: int) -> None:
        """Every overlap among the sorted keys of one family, as
        ``overlap.Claims.pairs`` finds them: each claim against the chain of
        prefixes that contain it."""
        stack: list[tuple[int, int]] = []  # (last address, number)
        for key in family:
            network = key >> _ID_BITS
            first = network >> 8
            while stack and stack[-1][0] < first:
                stack.pop()
            number = key & _ID_MASK
            for _, outer in stack:
                self._pair(outer, number)
            stack.append((first | ((1 << (bits - (network & 0xFF))) - 1), number))

    def _containing(self, number: int) -> Iterator[int]:
        """The claims whose prefix contains this claim's or equals it."""
        subnet = self.claims[number][2]
        kind, address, prefixlen, _ = subnet
        bits, family = BITS[kind], self.keys[kind]
        for length in self.lengths[kind]:
            if length <= prefixlen:
                shift = bits - length
                network = (address >> shift << shift) << 8 | length
                index = bisect_left(family, network << _ID_BITS)
                while index < len(family) and family[index] >> _ID_BITS == network:
                    yield family[index] & _ID_MASK
                    index += 1

    def _contained(self, number: int) -> Iterator[int]:
        """The claims whose prefix lies inside this claim's, and is longer."""
        subnet = self.claims[number][2]
        kind, address, prefixlen, _ = subnet
        family = self.keys[kind]
        last = address | ((1 << (BITS[kind] - prefixlen)) - 1)
        high = (last << 8 | 0xFF) << _ID_BITS | _ID_MASK
        index = bisect_left(family, (address << 8 | (prefixlen + 1)) << _ID_BITS)
        while index < len(family) and family[index] <= high:
            yield family[index] & _ID_MASK
            index += 1

    def _pair(self, one: int, two: int) -> None:
        """Record the overlap of two claims, unless they are one node's or allowed."""
        pair = (one, two) if one < two else (two, one)
        if pair in self.overlaps:
            return
        node, line, subnet, key = self.claims[one]
        other_node, other_line, other_subnet, other_key = self.claims[two]
        if node == other_node:
            return
        first = Claim.of(_subnet(subnet), node, line)
        second = Claim.of(_subnet(other_subnet), other_node, other_line)
        # the wider prefix is the outer one; of two equal ones either (their
        # findings are the same two, each naming the other)
        outer, inner = (first, second) if key >> _ID_BITS <= other_key >> _ID_BITS else (second, first)
        if overlap_allowed(self.policy, outer, inner):
            return
        self.overlaps[pair] = overlap_findings(self.hosts, outer, inner)
        self.pairs.setdefault(one, []).append(pair)
        self.pairs.setdefault(two, []).append(pair)


def _names(entries: Sequence[TreeEntry]) -> list[str] | None:
    """The entries' names (dot files left out), when each is there once and
    in order, and every regular file has its blob id; else None."""
    names = [entry.name for entry in entries if not is_ignored(entry.name)]
    if any(a >= b for a, b in pairwise(names)):
        return None
    if any(entry.kind is EntryKind.FILE and entry.blob is None for entry in entries):
        return None
    return names


class _Rebuilt(Mapping[str, HostFile]):
    """The valid nodes of a report, each ``Indexed`` one rebuilt when first asked for."""

    def __init__(self, hosts: dict[str, HostFile | Indexed], rebuild: Callable[[str], HostFile]) -> None:
        self.hosts, self.rebuild = hosts, rebuild

    def __getitem__(self, name: str) -> HostFile:
        host = self.hosts[name]
        if isinstance(host, Indexed):
            host = self.hosts[name] = self.rebuild(name)
        return host

    def __iter__(self) -> Iterator[str]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __contains__(self, name: object) -> bool:
        return name in self.hosts


def _nothing_indexed(name: str, blob: str) -> HostFile:
    raise KeyError(f"{name}: no file of a restored network ({blob})")


def _subnet(plain: Plain) -> Subnet:
    kind, address, prefixlen, weight = plain
    return tuple.__new__(Subnet, (_KINDS[kind], address, prefixlen, weight))  # the fields of a Subnet once built


_KINDS = tuple(Kind)


def _inside(prefixes: Sequence[Subnet], subnet: Subnet) -> bool:
    """``subnet`` lies inside (or is) one of the prefixes."""
    kind, address, prefixlen, _ = subnet
    bits = BITS[kind]
    for prefix in prefixes:
        if prefix.kind == kind and prefix.prefixlen <= prefixlen:
            shift = bits - prefix.prefixlen
            if address >> shift == prefix.address >> shift:
                return True
    return False
