"""The lowest free subnet of a prefix (pure), for ``syncd add-node``.

A candidate block is free when no existing claim overlaps it, except a
route or shared aggregate that strictly covers it (``::/0`` on the gateway
covers every node and takes nothing away).  Taken space is merged into
sorted intervals and walked once: O(n log n), whatever the number of nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from syncd.tinc.subnet import Kind, Subnet

if TYPE_CHECKING:
    from syncd.rules.policy import Policy
    from syncd.tinc.hostfile import HostFile


class AllocationError(ValueError):
    pass


def default_size(prefix: Subnet) -> int:
    """One /64 per node in an IPv6 prefix, one address in an IPv4 prefix."""
    return 64 if prefix.kind is Kind.IPV6 else 32


def reserved(network: Subnet) -> tuple[int, ...]:
    """The addresses of ``network`` that no host may have as its own: in
    IPv4, the network and broadcast addresses; in IPv6, the subnet-router
    anycast address (host bits all zero, RFC 4291 2.6.1).  A network of two
    addresses or one has none: both are hosts (RFC 3021, RFC 6164)."""
    if network.kind is Kind.MAC or network.prefixlen >= network.bits - 1:
        return ()
    return (network.first, network.last) if network.kind is Kind.IPV4 else (network.first,)


def next_free(prefix: Subnet, size: int, taken: Iterable[Subnet]) -> Subnet:
    if prefix.kind is Kind.MAC:
        raise AllocationError("cannot allocate from a MAC address")
    if not prefix.prefixlen <= size <= prefix.bits:
        raise AllocationError(f"/{size} does not fit in {prefix}")
    step = 1 << (prefix.bits - size)
    intervals = [(s.first, s.last) for s in taken if s.kind == prefix.kind and s.overlaps(prefix)]
    if not reserved(Subnet(prefix.kind, prefix.first, size)):
        # A block of one or two addresses is all hosts: it must not hold the
        # prefix's network or broadcast address.  A larger block may begin or
        # end there, as it does not give that address to a host either.
        intervals += [(address, address) for address in reserved(prefix)]
    candidate = prefix.first
    for first, last in sorted(intervals):
        if last < candidate:
            continue
        if first > candidate + step - 1:
            break  # the candidate block ends before this taken interval begins
        candidate = ((last + 1 + step - 1) // step) * step  # the next aligned block after it
    if candidate + step - 1 > prefix.last:
        raise AllocationError(f"no free /{size} left in {prefix}")
    return Subnet(prefix.kind, candidate, size)


def claimed(policy: Policy, hosts: Mapping[str, HostFile], size: int) -> list[Subnet]:
    """What takes space from blocks of ``/size``: every node's subnets but
    a route or shared aggregate wider than a block (the gateway's ``::/0``
    covers every node and takes nothing away)."""
    return [
        s
        for node, host in hosts.items()
        for s, _ in host.subnets
        if not (s.prefixlen < size and (policy.is_route(node, s) or policy.shared_entry(node, s) is not None))
    ]


def used_blocks(prefix: Subnet, size: int, taken: Iterable[Subnet]) -> int:
    """How many aligned ``/size`` blocks of ``prefix`` hold some of
    ``taken``: the taken intervals merged, then counted block by block, in
    one walk (O(n log n))."""
    shift = prefix.bits - size
    spans = sorted(
        (max(s.first, prefix.first) >> shift, min(s.last, prefix.last) >> shift)
        for s in taken
        if s.kind == prefix.kind and s.overlaps(prefix)
    )
    used, end = 0, -1
    for first, last in spans:
        if last <= end:
            continue
        used += last - max(first, end + 1) + 1
        end = last
    return used
