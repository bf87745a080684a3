"""Validation that follows the change (rules.incremental) gives exactly the
full check's report: the same findings in the same order, the same valid
nodes in the same order, the same parse cache, after any sequence of
host-file edits (overlaps made and unmade, names that collide, keys held
twice, subnets outside the prefixes, owner lines, files too large, entries
that are no files)."""

from __future__ import annotations

import marshal
import subprocess
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from syncd.rules.incremental import Network
from syncd.rules.netstore import plain, restore
from syncd.rules.plan import blob_id
from syncd.rules.policy import policy_of
from syncd.rules.tree import EntryKind, TreeEntry
from syncd.rules.validate import ParseCache, Report, check_entry, validate_network
from syncd.tinc.hostfile import HostFile
from tests.keyfactory import ed25519_text
from tests.test_authority import key_line

POLICIES = [
    b"tinc: '1.1'\nprefixes: [10.0.0.0/8, 'fd00::/8']\nmax_file_bytes: 120\n"
    b"routes:\n  alpha: ['10.1.0.0/16', '0.0.0.0/0']\n  omega: ['10.2.0.0/16']\n  Beta: ['192.168.1.0/24']\n"
    b"shared:\n  - subnet: 10.1.2.0/24\n    nodes: [beta, gamma]\n  - subnet: 'fd00:1::/64'\n    nodes: '*'\n",
    b"tinc: '1.1'\n",
    b"tinc: '1.1'\nprefixes: ['10.1.0.0/16']\nroutes:\n  gamma: ['10.0.0.0/8']\n  nobody: ['10.9.0.0/16']\n",
]
NAMES = ["alpha", "Alpha", "beta", "Beta", "gamma", "GAMMA", "delta", "omega", "bad-name!", "x-up", ".gitkeep"]
SUBNETS = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.0/24#5",
    "10.1.2.3",
    "10.2.0.0/16",
    "192.168.1.0/24",
    "0.0.0.0/0",
    "fd00::/8",
    "fd00:1::/64",
    "fd00:1::/32",
    "fe80::/10",
    "00:11:22:33:44:55",
    "10.1.2.0/23",
]
KEYS = [f"Ed25519PublicKey = {ed25519_text(seed)}" for seed in range(3)]
OWNER = f"# syncd-owner: {key_line(0)} admin@example.org"
EXTRA = ["Port = 655", "Address = 192.0.2.1", "Bogus line without equals", OWNER, "# syncd-owner: nonsense"]

line = st.one_of(st.sampled_from(SUBNETS).map(lambda s: f"Subnet = {s}"), st.sampled_from(KEYS), st.sampled_from(EXTRA))
content = st.lists(line, max_size=5).map(lambda lines: "".join(f"{x}\n" for x in lines).encode())
kind = st.sampled_from([EntryKind.FILE] * 6 + [EntryKind.SYMLINK, EntryKind.DIRECTORY])
file = st.tuples(kind, content)
network_files = st.dictionaries(st.sampled_from(NAMES), file, max_size=8)
# None: the file is removed; True: the network is saved and read back (as a fresh process does) first
edit = st.tuples(st.sampled_from(NAMES), st.one_of(st.none(), file), st.booleans())


File = tuple[EntryKind, bytes]


def tree(files: dict[str, File]) -> list[TreeEntry]:
    """The entries as a git tree lists them: in order of name, files with their blob ids."""
    entries = []
    for name in sorted(files):
        entry_kind, data = files[name]
        if entry_kind is EntryKind.FILE:
            entries.append(TreeEntry(name, entry_kind, len(data), data, blob_id(data)))
        else:
            entries.append(TreeEntry(name, entry_kind, 0, None))
    return entries


def assert_same(got: Report, want: Report) -> None:
    assert got.findings == want.findings
    assert list(got.hosts) == list(want.hosts)
    for name, host in want.hosts.items():
        other = got.hosts[name]
        assert (other.path, other.findings, other.subnets, other.keys, other.owners) == (
            host.path,
            host.findings,
            host.subnets,
            host.keys,
            host.owners,
        )
    assert (got.subnets, got.policy, got.policy_findings) == (want.subnets, want.policy, want.policy_findings)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(POLICIES), network_files, st.lists(edit, min_size=1, max_size=12))
def test_edits_followed_give_the_full_checks_report(
    policy_bytes: bytes,
    files: dict[str, tuple[EntryKind, bytes]],
    edits: list[tuple[str, tuple[EntryKind, bytes] | None, bool]],
) -> None:
    policy, policy_findings = policy_of(policy_bytes)
    context = (policy_bytes, "hosts")
    cache = ParseCache()
    entries = tree(files)
    report = validate_network(policy, entries, "hosts", policy_findings, cache)
    network = Network.of(context, policy, "hosts/", entries, report)
    assert network is not None

    def indexed_file(name: str, blob: str) -> HostFile:
        data = saved[name][1]
        host = check_entry(TreeEntry(name, EntryKind.FILE, len(data), data, blob), f"hosts/{name}", policy, None, False)
        assert isinstance(host, HostFile) and blob_id(data) == blob
        return host

    saved = dict(files)
    for name, change, restart in edits:
        if restart:  # the saved network, read back: its valid nodes' files are those of the tree it was saved at
            written = marshal.dumps(plain(network))  # type: ignore[arg-type]
            network = restore(marshal.loads(written), context, policy, indexed_file)
            assert network is not None
            saved, cache = dict(files), ParseCache()
        if change is None:
            files.pop(name, None)
        else:
            files[name] = change
        entries = tree(files)
        # only what is not cached carries its bytes, as sync.content hands them over
        prefix = "hosts/"
        entries = [
            e if (prefix + e.name, e.blob, policy.tinc, policy.min_rsa_bits) not in cache else e._replace(data=None)
            for e in entries
        ]
        got = network.update(context, policy, tuple(policy_findings), entries, cache)
        assert got is not None
        for finding in got.findings:
            event(finding.code)
        want_cache: dict[tuple[str, bytes | str, str, int], object] = {}
        want = validate_network(policy, tree(files), "hosts", policy_findings, want_cache)  # type: ignore[arg-type]
        assert_same(got, want)
        if not restart and not network.indexed:
            assert set(cache) == set(want_cache)


def test_a_network_serves_its_own_context_and_ordered_trees_only() -> None:
    policy_bytes = POLICIES[0]
    policy, policy_findings = policy_of(policy_bytes)
    files = {"alpha": (EntryKind.FILE, b"Subnet = 10.1.2.0/24\n"), "beta": (EntryKind.FILE, b"Subnet = 10.1.2.3\n")}
    entries = tree(files)
    cache = ParseCache()
    report = validate_network(policy, entries, "hosts", policy_findings, cache)
    assert [f.code for f in report.findings if f.code == "subnet-overlap"] == ["subnet-overlap"] * 2
    network = Network.of((policy_bytes, "hosts"), policy, "hosts/", entries, report)
    assert network is not None
    assert network.update((b"other policy", "hosts"), policy, (), entries, cache) is None
    assert network.update((policy_bytes, "hosts"), policy, (), entries[::-1], cache) is None
    assert network.update((policy_bytes, "hosts"), policy, (), entries + entries[-1:], cache) is None
    assert Network.of((policy_bytes, "hosts"), policy, "hosts/", entries[::-1], report) is None


def test_agent_passes_follow_the_tree_and_match_a_fresh_check(tmp_path: Path) -> None:
    """Through sync.content on a real repository: a kept ParseCache follows
    commit after commit (one edits a file, one adds an overlap, one changes
    the policy) and each report is the one of a fresh validation."""
    from syncd.errors import RefusedError
    from syncd.git.repository import GitRepository
    from syncd.node.parseindex import ParseIndexFile
    from syncd.sync.content import read_and_validate

    work = tmp_path / "repo"
    (work / "hosts").mkdir(parents=True)
    (work / "syncd.yaml").write_text("tinc: '1.1'\nprefixes: [10.0.0.0/8]\n")
    for i in range(5):
        (work / "hosts" / f"n{i}").write_text(f"Subnet = 10.0.{i}.0/24\n{KEYS[i % 2]}\n")
    git = ["git", "-c", "user.name=a", "-c", "user.email=a@example.org", "-C", str(work)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)

    def commit() -> str:
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "change"], check=True)
        return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()

    shas = [commit()]
    (work / "hosts" / "n1").write_text(f"Subnet = 10.0.1.0/24\n{KEYS[2]}\n")
    shas.append(commit())
    (work / "hosts" / "n5").write_text(f"Subnet = 10.0.0.0/16\n{KEYS[2]}\n")
    shas.append(commit())
    (work / "syncd.yaml").write_text("tinc: '1.1'\nprefixes: [10.0.0.0/8]\nroutes:\n  n5: [10.0.0.0/16]\n")
    shas.append(commit())
    (work / "hosts" / "n0").unlink()
    shas.append(commit())

    def fresh(sha: str) -> tuple[Report | None, str]:
        try:
            return read_and_validate(GitRepository.reading(work), sha)[0], ""
        except RefusedError as exc:  # a tree with errors is refused: compare the refusals
            return None, str(exc)

    def same(sha: str, **kwargs: Any) -> None:
        try:
            got: tuple[Report | None, str] = read_and_validate(GitRepository.reading(work), sha, **kwargs)[0], ""
        except RefusedError as exc:
            got = None, str(exc)
        want = fresh(sha)
        assert (got[1], got[0] and got[0].findings, got[0] and list(got[0].hosts)) == (
            want[1],
            want[0] and want[0].findings,
            want[0] and list(want[0].hosts),
        )
        if got[0] is not None and want[0] is not None:
            for name, host in want[0].hosts.items():
                assert got[0].hosts[name].keys == host.keys and got[0].hosts[name].subnets == host.subnets

    cache = ParseCache()  # the agent's: the network in memory
    state = tmp_path / "state"
    state.mkdir()
    for number, sha in enumerate(shas):
        same(sha, parse_cache=cache)
        assert cache.network is not None
        if number == 2:  # an agent started again: its first pass restores the saved network, then keeps it
            cache = ParseCache()
            same(sha, parse_cache=cache, index=ParseIndexFile(state))
            assert cache.network is not None and cache.network.indexed
        # a fresh process each time: the network saved with the parse index
        same(sha, index=ParseIndexFile(state))
        saved = ParseIndexFile(state).network()
        assert (saved is not None) == (number > 0)  # a first sync keeps no network
    # a saved network that does not hold together is let go: the full check
    index = ParseIndexFile(state)
    index.add({}, ("nonsense",), set)
    same(shas[1], index=ParseIndexFile(state))


def test_an_indexed_file_comes_back_as_parsed() -> None:
    """A record of the parse index gives back the host file validation saw."""
    from syncd.node.parseindex import host_of, record_of
    from syncd.rules.validate import check_entry

    policy, _ = policy_of(POLICIES[2])
    data = f"Subnet = 10.1.2.0/24#5\nSubnet = fd00:1::/64\nSubnet = 00:11:22:33:44:55\nPort = 655\n{KEYS[0]}\n{OWNER}\n"
    for text in (data, data + "Bogus line\n"):
        entry = TreeEntry("alpha", EntryKind.FILE, len(text), text.encode(), blob_id(text.encode()))
        host = check_entry(entry, "hosts/alpha", policy, None, False)
        assert not isinstance(host, tuple)
        record = record_of(host, entry.size)
        assert record is not None
        back = host_of("hosts/alpha", record)
        assert (back.path, back.findings, back.subnets, back.keys, back.owners) == (
            host.path,
            host.findings,
            host.subnets,
            host.keys,
            host.owners,
        )
        assert [type(s.kind) for s, _ in back.subnets] == [type(s.kind) for s, _ in host.subnets]
        assert [type(k) for k, _ in back.keys] == [type(k) for k, _ in host.keys]
