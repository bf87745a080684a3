"""The tip's content: its policy and host files, validated exactly as
``syncd check`` validates a working tree, read as little as possible.

A host file the parse index (or a long-running agent's cache) knows by blob
id is not read at all; only new contents are parsed.  Bytes that must be
read (to parse, or to install) come from the installed file when its blob
id is the tree's, and are used only if they still hash to that id."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from syncd.errors import Reason, RefusedError, UnsafeTreeError
from syncd.findings import Finding, Severity, plural

MAX_LISTED = 20  # findings a refusal lists, one a line
# Files changed since the parse index was saved, past which a pass that
# follows the last tree (and so reads no index) saves it again.  The index is
# a cache for the next process, which parses what it lacks: at most this many.
UNSAVED = 64

if TYPE_CHECKING:
    from syncd.node.parseindex import Key as IndexKey
    from syncd.node.parseindex import Record as IndexRecord
    from syncd.rules.incremental import Network
    from syncd.rules.policy import Policy
    from syncd.rules.tree import TreeEntry
    from syncd.rules.validate import CacheKey, ParseCache, Report
    from syncd.sync.ports import ParseIndex, Repository
    from syncd.tinc.hostfile import HostFile


def read_and_validate(
    repo: Repository,
    commit: str,
    *,
    installed: Mapping[str, str] | None = None,
    read_installed: Callable[[str], bytes | None] | None = None,
    index: ParseIndex | None = None,
    parse_cache: ParseCache | None = None,
    save_index: bool = True,
) -> tuple[Report, Mapping[str, bytes], dict[str, str]]:
    """The commit's policy and hosts directory, validated exactly as
    ``syncd check`` validates a working tree; the host files to install
    (name → bytes, read on demand) and their blob ids.  Any error finding
    refuses the commit.

    ``installed`` (name → blob id) and ``read_installed`` are a node's hosts
    directory, ``index`` its parse index (saved unless ``save_index`` is
    false); ``syncd verify`` has none of them.  A host file already in the
    parse index (or ``parse_cache``) by blob id is
    not read at all; only new contents are parsed.  Bytes that are read come
    from the installed file when its blob id is the tree's (cheaper than
    inflating it from a pack), and are used only if they still hash to that
    id: as firmly bound to the signed commit as the store's copy."""
    from syncd.node.parseindex import size_of
    from syncd.rules.policy import policy_of
    from syncd.rules.validate import ParseCache

    cache: dict[CacheKey, HostFile] = parse_cache if parse_cache is not None else {}
    keeping = parse_cache if isinstance(parse_cache, ParseCache) else None
    try:
        policy_bytes = repo.policy_bytes(commit)
        policy, policy_findings = policy_of(policy_bytes)
        context = (policy_bytes, policy.hosts_dir)
        network = keeping.network if keeping is not None else None
        network = network if network is not None and network.context == context else None
        if keeping is not None:
            keeping.network = None  # until this tree's network is whole (an error may leave it half updated)
        # the network of the last tree has every unchanged file: the index is not read
        files = _Files(repo, installed or {}, read_installed, policy.max_file_bytes)
        known, network, restored = _stored(index, network, context, policy, files)
        sizes = network.sizes if network is not None else {blob: size_of(r) for (blob, _, _), r in known.items()}
        entries = repo.host_entries(commit, policy.hosts_dir, policy.max_files, policy.max_file_bytes, sizes)
        if network is None:
            _prime(cache, known, entries, policy.hosts_dir, policy.tinc, policy.min_rsa_bits)
            entries = [_fill(files, cache, policy, e) for e in entries]
        build = keeping is not None or bool(known)  # a network worth keeping: not for a first sync
        report, network, full = _validate(
            cache, network, restored, build, context, policy, policy_findings, entries, files
        )
    except UnsafeTreeError as exc:
        raise UnsafeTreeError(f"commit {commit[:12]}: {exc.message}; nothing was installed") from None
    if keeping is not None:
        keeping.network = network
    if save_index and index is not None:
        if network is None:
            _update_index(index, known, cache, entries, policy.tinc, policy.min_rsa_bits)
        elif full or network.unsaved >= (UNSAVED if keeping is not None else 1):
            _save_network(index, cache, network, full)
    errors = [f for f in report.findings if f.severity is Severity.ERROR]
    if errors:
        raise invalid_content(commit, errors)
    ids = {e.name: e.blob for e in entries if e.name in report.hosts and e.blob is not None}
    files.known.update({e.name: e.data for e in entries if e.name in ids and e.data is not None})
    return report, _Desired(files, ids), ids


def invalid_content(commit: str, errors: Sequence[Finding]) -> RefusedError:
    """The refusal of a tree with error findings: a one-line summary, then
    one finding a line, as ``syncd check`` prints them (the first
    ``MAX_LISTED``: a journal or a pusher's terminal is no place for ten
    thousand)."""
    codes, sha = ", ".join(sorted({f.code for f in errors})), commit[:12]
    lines = [f.format_text() for f in errors[:MAX_LISTED]]
    if len(errors) > MAX_LISTED:
        lines.append(f"... and {len(errors) - MAX_LISTED} more (syncd check on a clone at {sha} lists them all)")
    summary = f"commit {sha} has invalid content [{codes}]: {plural(len(errors), 'error')}; nothing was installed"
    return RefusedError("\n".join([summary, *lines]), reason=Reason.INVALID_CONTENT)


def _stored(
    index: ParseIndex | None, network: Network | None, context: tuple[object, ...], policy: Policy, files: _Files
) -> tuple[dict[IndexKey, IndexRecord], Network | None, bool]:
    """The parse index's records (none when ``network`` is at hand), and
    the network: ``network``, or the one saved with the index for this
    context (restored: True), or None."""
    from syncd.node.parseindex import ParseIndexFile
    from syncd.rules.netstore import restore
    from syncd.rules.tree import EntryKind, TreeEntry
    from syncd.rules.validate import check_entry
    from syncd.tinc.hostfile import HostFile

    def indexed_file(name: str, blob: str) -> HostFile:
        """A valid node's file of a restored network, when a report is
        asked for it (the node's own, say): read and parsed again, which
        gives what its record holds (parsing is deterministic), at the cost
        of one file rather than of reading every record."""
        data = files.read(name, blob)
        entry = TreeEntry(name, EntryKind.FILE, len(data), data, blob)
        host = check_entry(entry, _path(policy.hosts_dir, entry), policy, None, False)
        if not isinstance(host, HostFile):
            raise UnsafeTreeError(f"{_path(policy.hosts_dir, entry)} is no longer a valid host file")
        return host

    if network is None and isinstance(index, ParseIndexFile):
        saved = index.network()
        network = restore(saved, context, policy, indexed_file) if saved is not None else None
        if network is None:
            return index.load(), None, False
        return {}, network, True
    if network is not None:
        network.indexed_file = indexed_file  # this pass's files (a kept network outlives its first)
        return {}, network, False
    return (index.load() if index is not None else {}), None, False


def _validate(
    cache: dict[CacheKey, HostFile],
    network: Network | None,
    restored: bool,
    build: bool,
    context: tuple[object, ...],
    policy: Policy,
    policy_findings: Sequence[Finding],
    entries: list[TreeEntry],
    files: _Files,
) -> tuple[Report, Network | None, bool]:
    """``validate_network`` of the entries, or its exact result from the
    network of the last tree (``rules.incremental``) when there is one for
    this context; the network of this tree (when ``build``, or one was
    followed); whether the full check ran.  Without a network the entries not in ``cache`` carry their
    bytes; with one, the changed ones are filled here."""
    from syncd.rules.incremental import Network
    from syncd.rules.validate import validate_network

    report = None
    if network is not None:

        def fill(entry: TreeEntry) -> TreeEntry:
            return _fill(files, cache, policy, entry)

        try:
            report = network.update(context, policy, tuple(policy_findings), entries, cache, fill)
        except (KeyError, TypeError, ValueError, IndexError):
            if not restored:
                raise
            report = None  # a saved network that does not hold together (it is a cache): the full check
        if report is None:  # not a tree the network can follow: every file as the full check reads it
            entries[:] = [_fill(files, cache, policy, e) for e in entries]
    if report is None:
        report = validate_network(policy, entries, policy.hosts_dir, policy_findings, cache)
        prefix = f"{policy.hosts_dir.rstrip('/')}/" if policy.hosts_dir else ""
        network = Network.of(context, policy, prefix, entries, report) if build else None
        return report, network, True
    return report, network, False


def _save_network(index: ParseIndex, cache: Mapping[CacheKey, HostFile], network: Network, full: bool) -> None:
    """Add the records of the files parsed (``cache``) to the parse index,
    with this tree's network beside them when the index is the state
    directory's file and has a record of each valid node's file.  Records of
    files no longer in the tree stay a while (it is a cache)."""
    from syncd.node.parseindex import ParseIndexFile, record_of
    from syncd.rules.netstore import plain

    tinc, bits = network.policy.tinc, network.policy.min_rsa_bits
    known = index.load() if full or len(cache) > UNSAVED else {}  # else: the few changed files
    fresh: dict[IndexKey, IndexRecord] = {}
    whole = True  # the cache holds valid nodes' files alone
    for (_, blob, _, _), host in cache.items():
        key = (str(blob), tinc, bits)
        if key not in known and blob in network.sizes:
            record = record_of(host, network.sizes[key[0]])
            whole = whole and record is not None
            if record is not None:
                fresh[key] = record
    if isinstance(index, ParseIndexFile):
        current = lambda: {b or "" for _, b, _ in network.signatures.values()}  # noqa: E731
        index.add(fresh, plain(network) if whole else None, current)
    else:
        index.save({**index.load(), **fresh})
    network.unsaved = 0


def _fill(files: _Files, cache: Mapping[CacheKey, HostFile], policy: Policy, entry: TreeEntry) -> TreeEntry:
    """The entry with its bytes, unless ``cache`` has its file parsed."""
    if (_path(policy.hosts_dir, entry), entry.blob, policy.tinc, policy.min_rsa_bits) in cache:
        return entry
    return files.fill(entry)


def _path(hosts_dir: str, entry: TreeEntry) -> str:
    return f"{hosts_dir.rstrip('/')}/{entry.name}" if hosts_dir else entry.name


def _prime(
    cache: dict[CacheKey, HostFile],
    index: Mapping[IndexKey, IndexRecord],
    entries: list[TreeEntry],
    hosts_dir: str,
    tinc: str,
    min_rsa_bits: int,
) -> None:
    """Put the indexed files of this tree into ``cache``."""
    from syncd.node.parseindex import host_of

    for entry in entries:
        if entry.blob is None:
            continue
        key = (_path(hosts_dir, entry), entry.blob, tinc, min_rsa_bits)
        if key not in cache:
            record = index.get((entry.blob, tinc, min_rsa_bits))
            if record is not None:
                cache[key] = host_of(key[0], record)


def _update_index(
    index: ParseIndex,
    known: dict[IndexKey, IndexRecord],
    cache: dict[CacheKey, HostFile],
    entries: list[TreeEntry],
    tinc: str,
    min_rsa_bits: int,
) -> None:
    """Store the files of this tree (the cache holds exactly those), when
    the index does not hold exactly them already."""
    from syncd.node.parseindex import record_of

    sizes = {e.blob: e.size for e in entries if e.blob is not None}
    fresh: dict[IndexKey, IndexRecord] = {}
    for (_, blob, _, _), host in cache.items():
        if isinstance(blob, str) and blob in sizes:
            key = (blob, tinc, min_rsa_bits)
            record = known.get(key) or record_of(host, sizes[blob])
            if record is not None:
                fresh[key] = record
    if fresh.keys() != known.keys():
        index.save(fresh)


class _Files:
    """The bytes of a tree's host files, read when first needed."""

    def __init__(
        self,
        repo: Repository,
        installed: Mapping[str, str],
        read_installed: Callable[[str], bytes | None] | None,
        limit: int,
    ) -> None:
        self.repo, self.installed, self.read_installed, self.limit = repo, installed, read_installed, limit
        self.known: dict[str, bytes] = {}

    def fill(self, entry: TreeEntry) -> TreeEntry:
        from syncd.rules.tree import EntryKind

        if entry.kind is not EntryKind.FILE or entry.blob is None or entry.size > self.limit:
            return entry
        return entry._replace(data=self.read(entry.name, entry.blob))

    def read(self, name: str, blob: str) -> bytes:
        from syncd.rules.plan import blob_id

        data = self.known.get(name)
        if data is not None:
            return data
        if self.read_installed is not None and self.installed.get(name) == blob:
            data = self.read_installed(name)
            if data is not None and blob_id(data) == blob:
                return data
        return self.repo.blob(blob, self.limit)


class _Desired(Mapping[str, bytes]):
    """name → bytes of the files to install, read only when asked (the plan
    asks for the files it writes)."""

    def __init__(self, files: _Files, ids: dict[str, str]) -> None:
        self.files, self.ids = files, ids

    def __getitem__(self, name: str) -> bytes:
        return self.files.read(name, self.ids[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, name: object) -> bool:
        return name in self.ids  # without reading the file, as Mapping's would

    def __len__(self) -> int:
        return len(self.ids)
