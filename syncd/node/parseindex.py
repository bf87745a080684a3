"""The parse index: what validation needs of each host file, by blob id.

Parsing is deterministic: the same bytes (one blob id), read as the same
tinc version with the same ``min_rsa_bits``, always give the same subnets,
keys and findings.  A pass stores those for every host file it validated
(``state_dir/parse-index``), so a fresh ``syncd sync`` after a one-file
change parses one file and runs the network checks (overlaps, duplicate
keys, prefixes) on the stored claims of the others.

The file is ``marshal`` data of plain tuples, ints, strings and bytes
(``marshal`` builds no objects of its own classes and runs no code), written
atomically and private like the rest of ``state_dir``.  It is a cache: a
missing, unreadable or foreign file is ignored and rebuilt.
"""

from __future__ import annotations

import functools
import marshal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.tinc.hostfile import HostFile

INDEX_FILE = "parse-index"
VERSION = 3  # records: findings, subnets, keys, size, owners

Key = tuple[str, str, int]  # blob id, tinc version, min_rsa_bits
Record = tuple[object, ...]


def record_of(host: HostFile, size: int) -> Record | None:
    """``host`` (of ``size`` bytes) as plain data, or None when it cannot be
    stored without its path (a finding that points into another file)."""
    findings = []
    for f in host.findings:
        if f.path != host.path or any(r.path != host.path for r in f.related):
            return None
        findings.append((f.line, str(f.severity), f.code, f.message, tuple(r.line for r in f.related)))
    subnets = tuple((int(s.kind), s.address, s.prefixlen, s.weight, line) for s, line in host.subnets)
    keys = tuple((k.algorithm, k.bits, k.identity, line) for k, line in host.keys)
    return (tuple(findings), subnets, keys, size, host.owners)


def host_of(path: str, record: Record) -> HostFile:
    """The ``HostFile`` validation sees, rebuilt for the file at ``path``.

    A fresh pass rebuilds one per node, so the values are built as tuples
    underneath (``Subnet``, ``PublicKey``), from fields the record was made
    of, without their constructors' checks."""
    finding, location, severity_of, host_file, public_key, subnet, kinds = _types()
    findings, subnets, keys, _size, owners = record
    host: HostFile = host_file(path)
    if findings:
        host.findings = [
            finding(path, line, severity_of(severity), code, message, tuple(location(path, r) for r in related))
            for line, severity, code, message, related in findings  # type: ignore[attr-defined]
        ]
    new = tuple.__new__
    host.subnets = [
        (new(subnet, (kinds[kind], address, prefixlen, weight)), line)
        for kind, address, prefixlen, weight, line in subnets  # type: ignore[attr-defined]
    ]
    host.keys = [(new(public_key, (algorithm, bits, identity)), line) for algorithm, bits, identity, line in keys]  # type: ignore[attr-defined]
    host.owners = owners  # type: ignore[assignment]
    return host


@functools.cache
def _types() -> tuple[Any, ...]:
    """What ``host_of`` builds with (imported when first needed)."""
    from syncd.findings import Finding, Location, Severity
    from syncd.tinc.hostfile import HostFile
    from syncd.tinc.keys import PublicKey
    from syncd.tinc.subnet import Kind, Subnet

    return Finding, Location, Severity, HostFile, PublicKey, Subnet, tuple(Kind)


def owners_of(record: Record) -> tuple[frozenset[bytes], dict[bytes, str]]:
    """The owner keys of an indexed file, and their comments."""
    owners = record[4]
    assert isinstance(owners, tuple)
    return frozenset(key for key, _ in owners), {key: comment for key, comment in owners if comment}


def size_of(record: Record) -> int:
    size = record[3]
    assert isinstance(size, int)
    return size


def load(state_dir: Path) -> dict[Key, Record]:
    try:
        data = marshal.loads((state_dir / INDEX_FILE).read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    if not isinstance(data, tuple) or len(data) != 2 or data[0] != VERSION or not isinstance(data[1], dict):
        return {}
    return data[1]


class ParseIndexFile:
    """``state_dir/parse-index`` as a pass sees it (the
    ``sync.ports.ParseIndex`` port)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def load(self) -> dict[Key, Record]:
        return load(self.state_dir)

    def save(self, index: dict[Key, Record]) -> None:
        save(self.state_dir, index)


def save(state_dir: Path, index: dict[Key, Record]) -> None:
    from syncd.node.files import write_atomic

    write_atomic(state_dir / INDEX_FILE, marshal.dumps((VERSION, index)), 0o600)
