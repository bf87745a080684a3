"""A ``Network`` (``rules.incremental``) kept on disk beside the parse
index, so that a fresh process validates a one-file change by updating the
last tree's findings rather than by checking every file again.

``plain`` gives it as ``marshal`` writes it (plain tuples, lists, dicts,
strings, ints and bytes: no objects of syncd's classes, no code run when
read), and ``restore`` reads it back, checked field by field; its valid
nodes' files are the parse index's records, saved in the same file
(``node.parseindex``), so the two always describe the same tree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from syncd.findings import Finding, Location, Severity
from syncd.rules.incremental import Indexed, Network

if TYPE_CHECKING:
    from syncd.rules.policy import Policy
    from syncd.tinc.hostfile import HostFile


def restore(
    data: object, context: tuple[object, ...], policy: Policy, indexed_file: Callable[[str, str], HostFile]
) -> Network | None:
    """The network ``plain`` gave, for ``context``; ``indexed_file`` gives
    its valid nodes' files, by name and blob id, when a report is asked for
    one.  None when it is another
    context's, or not of the shape ``plain`` writes."""
    if not isinstance(data, tuple) or len(data) != len(_FIELDS) + 2 or data[0] != context:
        return None
    network = Network(context, policy, data[1])
    for field, value in zip(_FIELDS, data[2:], strict=True):
        if not isinstance(value, type(getattr(network, field))):
            return None
        setattr(network, field, value)
    hosts, signatures = network.hosts, network.signatures
    network.hosts = {name: Indexed(network.prefix + name) for name in hosts}
    network.indexed, network.indexed_file = len(hosts), indexed_file
    network.sizes = {blob: size for _, blob, size in signatures.values() if blob is not None}
    parts: tuple[dict[Any, Any], ...] = (network.own, network.overlaps, network.duplicates, network.collisions)
    for part in parts:
        for key, found in part.items():
            part[key] = tuple(_finding(f) for f in found)
    return network


def plain(network: Network) -> tuple[object, ...]:
    """This network as ``marshal`` writes it (plain tuples, lists,
    dicts, strings, ints and bytes), for ``restore``."""
    data: list[object] = [network.context, network.prefix]
    for field in _FIELDS:
        value = getattr(network, field)
        if field == "hosts":
            value = dict.fromkeys(value)
        elif field in _FINDINGS:
            value = {key: tuple(_plain_finding(f) for f in found) for key, found in value.items()}
        data.append(value)
    return tuple(data)


# what ``plain`` writes, in order, after the context and the prefix
_FIELDS = (
    "signatures",
    "hosts",
    "identities",
    "own",
    "keys",
    "lengths",
    "claims",
    "by_node",
    "numbered",
    "overlaps",
    "pairs",
    "holders",
    "duplicates",
    "groups",
    "collisions",
)
_FINDINGS = {"own", "overlaps", "duplicates", "collisions"}


def _plain_finding(finding: Finding) -> tuple[object, ...]:
    path, line, severity, code, message, related = finding
    return (path, line, severity.value, code, message, tuple((r.path, r.line) for r in related))


def _finding(plain: tuple[object, ...]) -> Finding:
    path, line, severity, code, message, related = plain
    places = tuple(Location(p, n) for p, n in related)  # type: ignore[attr-defined]
    return Finding(path, line, Severity(severity), code, message, places)  # type: ignore[arg-type]
