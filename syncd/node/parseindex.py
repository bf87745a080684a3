"""The parse index: what validation needs of each host file, by blob id.

Parsing is deterministic: the same bytes (one blob id), read as the same
tinc version with the same ``min_rsa_bits``, always give the same subnets,
keys and findings.  A pass stores those for every host file it validated
(``state_dir/parse-index``), so a fresh ``syncd sync`` after a one-file
change parses one file and runs the network checks (overlaps, duplicate
keys, prefixes) on the stored claims of the others.

Beside the records it keeps the findings of the last tree, split by what
each depends on (``rules.netstore``), so that a fresh pass after a one-file
change updates them for that file instead of running the network checks
again; both are written at once, so they always describe one tree.

The file is ``marshal`` data of plain tuples, ints, strings and bytes
(``marshal`` builds no objects of its own classes and runs no code), written
atomically and private like the rest of ``state_dir``.  It is a cache: a
missing, unreadable or foreign file is ignored and rebuilt.
"""

from __future__ import annotations

import functools
import marshal
from collections.abc import Callable, Container
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.tinc.hostfile import HostFile

INDEX_FILE = "parse-index"
VERSION = 4  # records: findings, subnets, keys, size, owners; and the last tree's network

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


EXTRA = 256  # records added since the file's base was written, past which the base is written again


def load(state_dir: Path) -> dict[Key, Record]:
    return ParseIndexFile(state_dir).load()


class ParseIndexFile:
    """``state_dir/parse-index`` as a pass sees it (the
    ``sync.ports.ParseIndex`` port), read once per pass however many ask.

    The file holds the records as a base (marshal data of its own, read only
    when some record is asked for) and the few added since; and the network
    of the last tree (``rules.netstore``), read at once: a pass that follows
    it asks for no record, and writes the base again only every ``EXTRA``
    records."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._file: tuple[bytes, dict[Key, Record], object] | None = None
        self._records: dict[Key, Record] | None = None

    def load(self) -> dict[Key, Record]:
        """The records (the callers change them not)."""
        if self._records is None:
            base, extra, _ = self._read()
            try:
                records = marshal.loads(base) if base else {}
            except (ValueError, EOFError, TypeError):
                records = {}
            self._records = {**records, **extra} if isinstance(records, dict) else dict(extra)
        return self._records

    def network(self) -> object:
        """The last tree's network, as saved (``rules.netstore.restore`` checks it), or None."""
        return self._read()[2]

    def save(self, index: dict[Key, Record], network: object = None) -> None:
        self._write(marshal.dumps(index), {}, network)
        self._records = index

    def add(self, records: dict[Key, Record], network: object, keep: Callable[[], Container[str]]) -> None:
        """Add ``records`` and replace the network; when the records added
        since the base was written grow past ``EXTRA``, write the base again
        with those of the blobs in ``keep()`` alone."""
        base, extra, _ = self._read()
        if len(extra) + len(records) <= EXTRA:
            self._write(base, {**extra, **records}, network)
            if self._records is not None:
                self._records = {**self._records, **records}
            return
        blobs = keep()
        merged = {key: record for key, record in {**self.load(), **records}.items() if key[0] in blobs}
        self.save(merged, network)

    def _read(self) -> tuple[bytes, dict[Key, Record], object]:
        if self._file is None:
            self._file = b"", {}, None
            try:
                data = marshal.loads((self.state_dir / INDEX_FILE).read_bytes())
            except (OSError, ValueError, EOFError, TypeError):
                return self._file
            whole = isinstance(data, tuple) and len(data) == 4 and data[0] == VERSION
            if whole and isinstance(data[1], bytes) and isinstance(data[2], dict):
                self._file = data[1], data[2], data[3]
        return self._file

    def _write(self, base: bytes, extra: dict[Key, Record], network: Any) -> None:
        from syncd.node.files import write_atomic

        write_atomic(self.state_dir / INDEX_FILE, marshal.dumps((VERSION, base, extra, network)), 0o600)
        self._file = base, extra, network


def save(state_dir: Path, index: dict[Key, Record]) -> None:
    ParseIndexFile(state_dir).save(index)
