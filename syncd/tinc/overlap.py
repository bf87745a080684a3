"""Which subnets of different nodes overlap: an O(n log n) sweep over
sorted integer intervals, one family at a time (pure).

A network of 100k nodes announces 200k subnets or more, so the claims are
kept compact (``Claims``): integers in lists and flat arrays, not one object
per claim.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from syncd.tinc.subnet import BITS, Kind, Subnet


class Claim(NamedTuple):
    """A subnet as announced by one node, with where it was written: one
    claim of ``Claims`` as a value, for the findings about it.

    Its field order is the sweep's order: family, first address, widest
    prefix first, then node and line (which make the order total).
    """

    kind: int
    first: int
    prefixlen: int
    node: str
    line: int
    last: int
    subnet: Subnet

    @classmethod
    def of(cls, subnet: Subnet, node: str, line: int) -> Claim:
        kind, address, prefixlen, _ = subnet
        last = address | ((1 << (BITS[kind] - prefixlen)) - 1)
        return _new_claim(cls, (kind, address, prefixlen, node, line, last, subnet))


_new_claim = tuple.__new__  # Claim.of computes every field itself


def overlapping_pairs(claims: Iterable[Claim]) -> Iterator[tuple[Claim, Claim]]:
    """Every pair of claims by *different* nodes whose subnets overlap.

    Yields ``(outer, inner)`` with ``outer`` containing ``inner``; identical
    subnets come ordered by node name (``Claims.pairs`` does the sweep).
    """
    listed = sorted(claims)
    found = Claims()
    for claim in listed:
        found.add(claim.subnet, claim.node, claim.line)
    for outer, inner in found.pairs():
        yield listed[outer], listed[inner]


_INDEX_BITS = 40  # a claim's number, in the low bits of its sort key


class Claims:
    """Subnets as announced by nodes, numbered in the order they are added,
    kept compact for networks of 100k nodes: per family one list of integer
    sort keys (first address, prefix length, number), and per number the
    node, line, weight and family in flat arrays.  ``subnet(i)`` rebuilds
    the ``Subnet`` of claim ``i`` when a finding needs it.

    Claims added in (node, line) order sort as ``Claim`` tuples do.
    """

    __slots__ = ("_key_of", "_keys", "kinds", "lines", "nodes", "weights")

    def __init__(self) -> None:
        self._keys: tuple[list[int], list[int], list[int]] = ([], [], [])  # by Kind
        self.nodes: list[str] = []
        self.lines = array("q")
        self.weights = array("q")
        self.kinds = bytearray()
        self._key_of: list[int] = []  # by number: its sort key (the same int object)

    def __len__(self) -> int:
        return len(self.nodes)

    def add(self, subnet: Subnet, node: str, line: int) -> None:
        kind, address, prefixlen, weight = subnet
        key = (address << 8 | prefixlen) << _INDEX_BITS | len(self.nodes)
        self._keys[kind].append(key)
        self._key_of.append(key)
        self.nodes.append(node)
        self.lines.append(line)
        self.weights.append(weight)
        self.kinds.append(kind)

    def subnet(self, index: int) -> Subnet:
        network = self._key_of[index] >> _INDEX_BITS
        return Subnet(Kind(self.kinds[index]), network >> 8, network & 0xFF, self.weights[index])

    def claim(self, index: int) -> Claim:
        return Claim.of(self.subnet(index), self.nodes[index], self.lines[index])

    def pairs(self) -> Iterator[tuple[int, int]]:
        """``(outer, inner)`` numbers of every pair of claims by different
        nodes whose subnets overlap, ``outer`` containing ``inner``.

        Prefixes never partially overlap: two of them are either disjoint or
        nested.  So one sort by (first address, widest first) and a sweep
        that keeps the chain of enclosing prefixes on a stack finds all
        pairs in O(n log n + pairs): each claim is compared only with its
        ancestors on the stack (at most ``bits + 1`` distinct prefixes
        deep), never with every other claim.
        """
        nodes = self.nodes
        for kind, keys in enumerate(self._keys):
            keys.sort()
            bits = BITS[kind]
            stack: list[tuple[int, int]] = []  # (last address, number)
            for key in keys:
                index = key & _INDEX_MASK
                network = key >> _INDEX_BITS
                first = network >> 8
                while stack and stack[-1][0] < first:
                    stack.pop()
                node = nodes[index]
                for _, outer in stack:
                    if nodes[outer] != node:
                        yield outer, index
                stack.append((first | ((1 << (bits - (network & 0xFF))) - 1), index))


_INDEX_MASK = (1 << _INDEX_BITS) - 1
