"""Network-level validation: names, entries, overlaps under the policy, keys."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from syncd.cli.main import main
from syncd.findings import Location
from syncd.rules.policy import Policy, parse_policy
from syncd.rules.tree import EntryKind, Snapshot, TreeEntry
from syncd.rules.validate import Report, check_tree, validate_network
from tests.conftest import EXAMPLE_REPO
from tests.keyfactory import ed25519_text, rsa_pem
from tests.test_authority import key_line


def host(subnets: list[str], seed: int = 0, extra: str = "") -> bytes:
    lines = [f"Subnet = {s}" for s in subnets]
    return ("\n".join(lines) + "\n" + extra + rsa_pem(seed=seed)).encode()


def entries(files: dict[str, bytes]) -> list[TreeEntry]:
    return [TreeEntry(name, EntryKind.FILE, len(data), data) for name, data in files.items()]


def check(files: dict[str, bytes], policy: bytes | None = None) -> Report:
    report, _ = check_tree(Snapshot("test", policy, tuple(entries(files))))
    return report


def found(report: Report) -> list[tuple[str, int, str]]:
    return [(f.path, f.line, f.code) for f in report.findings]


SEED_POLICY = b"prefixes: [2002:102:304::/48]\nroutes:\n  gateway: ['::/0']\n"


def seed_network() -> dict[str, bytes]:
    return {
        "gateway": host(["2002:102:304::/64", "::/0"], 1, "Address = 1.2.3.4\n"),
        "my_pc": host(["2002:102:304:4::/64"], 2),
        "my_laptop": host(["2002:102:304:5::/64"], 3),
    }


def test_seed_network_is_clean() -> None:
    report = check(seed_network(), SEED_POLICY)
    assert found(report) == []
    assert report.nodes == 3 and report.subnets == 4


def test_default_route_without_policy_is_an_overlap() -> None:
    report = check(seed_network(), None)
    assert found(report) == [
        ("hosts/gateway", 2, "subnet-overlap"),  # ::/0 covers my_pc
        ("hosts/gateway", 2, "subnet-overlap"),  # and my_laptop
        ("hosts/my_laptop", 1, "subnet-overlap"),
        ("hosts/my_pc", 1, "subnet-overlap"),
    ]


def test_overlap_names_both_nodes_and_both_locations() -> None:
    files = seed_network() | {"evil": host(["2002:102:304:4::/62"], 4)}
    report = check(files, SEED_POLICY)
    overlaps = [f for f in report.findings if f.code == "subnet-overlap"]
    assert [(f.path, f.line) for f in overlaps] == [
        ("hosts/evil", 1),
        ("hosts/evil", 1),
        ("hosts/my_laptop", 1),
        ("hosts/my_pc", 1),
    ]
    evil_pc, evil_laptop, _, pc = overlaps
    assert "2002:102:304:4::/64 overlaps 2002:102:304:4::/62 of node evil (hosts/evil:1)" in pc.message
    assert [(r.path, r.line) for r in pc.related] == [("hosts/evil", 1)]
    assert "2002:102:304:4::/62 covers 2002:102:304:4::/64 of node my_pc (hosts/my_pc:1)" in evil_pc.message
    assert [(r.path, r.line) for r in evil_pc.related] == [("hosts/my_pc", 1)]
    assert "covers 2002:102:304:5::/64 of node my_laptop (hosts/my_laptop:1)" in evil_laptop.message


def test_a_new_file_claiming_a_gateways_subnet_is_reported_on_both_files() -> None:
    # evil sorts before gateway: the finding on the new file must not depend on the order
    files = seed_network() | {"evil": host(["2002:102:304::/64"], 4)}
    report = check(files, SEED_POLICY)
    assert found(report) == [("hosts/evil", 1, "subnet-overlap"), ("hosts/gateway", 1, "subnet-overlap")]
    on_evil, on_gateway = report.findings
    assert on_evil.message.startswith("2002:102:304::/64 is also announced by node gateway (hosts/gateway:1);")
    assert on_evil.related == (Location("hosts/gateway", 1),)
    assert on_gateway.message.startswith("2002:102:304::/64 is also announced by node evil (hosts/evil:1);")
    assert on_gateway.related == (Location("hosts/evil", 1),)


def test_route_must_be_declared_for_the_node_that_announces_it() -> None:
    files = seed_network() | {"rogue": host(["::/0"], 4)}
    report = check(files, SEED_POLICY)
    codes = found(report)
    # rogue's ::/0 is not its route: it overlaps every node, and the gateway's
    # identical ::/0 is allowed only when both are declared.
    assert ("hosts/rogue", 1, "subnet-overlap") in codes
    assert ("hosts/my_pc", 1, "subnet-overlap") in codes
    assert ("hosts/rogue", 1, "subnet-outside-prefix") in codes


def test_shared_subnets() -> None:
    files = {
        "gw01": host(["10.190.0.0/21", "10.190.0.11"], 1),
        "gw02": host(["10.190.0.0/21", "10.190.0.12"], 2),
        "gw03": host(["10.190.0.0/21"], 3),
    }
    policy = b"shared:\n  - {subnet: 10.190.0.0/21, nodes: [gw01, gw02]}\n"
    report = check(files, policy)
    # gw03 is not listed: its /21 is identical to gw01's and gw02's, and it
    # covers their /32s without being declared for gw03.
    assert found(report) == [
        ("hosts/gw01", 1, "subnet-overlap"),  # its /21 is also gw03's
        ("hosts/gw01", 2, "subnet-overlap"),  # its /32 lies in gw03's /21
        ("hosts/gw02", 1, "subnet-overlap"),
        ("hosts/gw02", 2, "subnet-overlap"),
        *[("hosts/gw03", 1, "subnet-overlap")] * 4,  # the other side of each
    ]
    assert all("node gw03 (hosts/gw03:1)" in f.message for f in report.findings[:4])
    assert {r.path for f in report.findings[:4] for r in f.related} == {"hosts/gw03"}
    assert sorted((r.path, r.line) for f in report.findings[4:] for r in f.related) == [
        ("hosts/gw01", 1),
        ("hosts/gw01", 2),
        ("hosts/gw02", 1),
        ("hosts/gw02", 2),
    ]
    star = b"shared:\n  - {subnet: 10.190.0.0/21, nodes: '*'}\n"
    assert found(check(files, star)) == []


def test_prefixes() -> None:
    files = seed_network() | {"stray": host(["10.0.0.0/24"], 4)}
    report = check(files, SEED_POLICY)
    assert found(report) == [("hosts/stray", 1, "subnet-outside-prefix")]


def test_policy_naming_unknown_nodes() -> None:
    report = check(seed_network(), SEED_POLICY + b"shared:\n  - {subnet: '::/0', nodes: [gateway, ghost]}\n")
    assert found(report) == [("syncd.yaml", 5, "policy-invalid")]
    assert "'ghost'" in report.findings[0].message


def test_names_and_collisions() -> None:
    files = {"alpha": host([], 1), "Alpha": host([], 2), "bad-name": host([], 3), "x" * 65: host([], 4)}
    codes = found(check(files))
    assert ("hosts/Alpha", 1, "name-collision") in codes
    assert ("hosts/alpha", 1, "name-collision") in codes
    assert ("hosts/bad-name", 1, "name-invalid") in codes
    assert (f"hosts/{'x' * 65}", 1, "name-invalid") in codes


def test_scripts_are_named_as_scripts() -> None:
    report = check({"gateway-up": b"#!/bin/sh\n", "gateway-down": b"#!/bin/sh\n"})
    assert [f.code for f in report.findings] == ["name-invalid", "name-invalid"]
    assert all("runs hosts/gateway-" in f.message and "as root" in f.message for f in report.findings)


def test_entry_types_and_sizes() -> None:
    items = [
        TreeEntry("link", EntryKind.SYMLINK, 10, None),
        TreeEntry("sub", EntryKind.DIRECTORY, 0, None),
        TreeEntry("mod", EntryKind.SUBMODULE, 0, None),
        TreeEntry("big", EntryKind.FILE, 70000, None),
        TreeEntry(".gitkeep", EntryKind.FILE, 0, b""),
    ]
    report = validate_network(Policy(), items, "hosts")
    assert found(report) == [
        ("hosts/big", 1, "file-too-large"),
        ("hosts/link", 1, "file-type"),
        ("hosts/mod", 1, "file-type"),
        ("hosts/sub", 1, "file-type"),
    ]


def test_duplicate_keys_name_every_node() -> None:
    files = {"a": host(["10.0.0.1"], 7), "b": host(["10.0.0.2"], 7), "c": host(["10.0.0.3"], 7), "d": host([], 8)}
    report = check(files)
    dups = [f for f in report.findings if f.code == "key-duplicate"]
    assert [f.path for f in dups] == ["hosts/a", "hosts/b", "hosts/c"]
    assert "used by a, b, c" in dups[0].message
    assert {r.path for r in dups[0].related} == {"hosts/b", "hosts/c"}


def test_duplicate_ed25519_keys() -> None:
    key = ed25519_text(5)
    files = {n: f"Ed25519PublicKey = {key}\n".encode() for n in ("a", "b")}
    report = check(files, b"tinc: '1.1'\n")
    assert [f.code for f in report.findings] == ["key-duplicate", "key-duplicate"]


def test_every_finding_is_collected_and_sorted() -> None:
    files = seed_network() | {
        "evil": host(["2002:102:304:4::/62", "10.0.0.1/8"], 2, "ConnectTo = gateway\n"),
        "bad-name": b"x",
    }
    report = check(files, SEED_POLICY + b"min_rsa_bits: 9\n")
    codes = {c for _, _, c in found(report)}
    assert codes >= {"subnet-overlap", "subnet-host-bits", "variable-server-only", "key-duplicate", "name-invalid"}
    assert "policy-invalid" in codes
    keys = [f.sort_key() for f in report.findings]
    assert keys == sorted(keys)


def test_policy_tinc_version_changes_key_rules() -> None:
    files = {"a": f"Ed25519PublicKey = {ed25519_text(1)}\n".encode()}
    assert [f.code for f in check(files, b"tinc: '1.1'\n").findings] == []
    assert "key-missing" in [f.code for f in check(files, b"tinc: '1.0'\n").findings]


def test_min_rsa_bits_comes_from_the_policy() -> None:
    files = {"a": rsa_pem(1024).encode()}
    assert [f.code for f in check(files).findings] == ["key-weak"]
    policy, _ = parse_policy(b"min_rsa_bits: 1024\n")
    assert validate_network(policy, entries(files), "hosts").findings == ()


def test_parse_cache_reuses_unchanged_files_and_forgets_removed_ones() -> None:
    from syncd.rules.validate import ParseCache

    files = seed_network()
    policy, _ = parse_policy(SEED_POLICY)
    cache = ParseCache()
    first = validate_network(policy, entries(files), "hosts", cache=cache)
    assert len(cache) == 3
    files["my_pc"] = host(["2002:102:304:4::/64"], 2, "Port = 656\n")
    del files["my_laptop"]
    second = validate_network(policy, entries(files), "hosts", cache=cache)
    assert second.hosts["gateway"] is first.hosts["gateway"]  # unchanged: not parsed again
    assert second.hosts["my_pc"] is not first.hosts["my_pc"]
    assert len(cache) == 2
    uncached = validate_network(policy, entries(files), "hosts")
    assert second.findings == uncached.findings and second.subnets == uncached.subnets


def test_owner_lines_are_checked_in_every_host_file() -> None:
    network = seed_network()
    network["my_pc"] = host(["2002:102:304:4::/64"], 2, f"# syncd-owner: {key_line(1)} me@pc\n#syncd-owner: x\n")
    network["my_laptop"] = host(["2002:102:304:5::/64"], 3, "# syncd-owner: ssh-ed25519 AAAA\n")
    network["gateway"] = host(["2002:102:304::/64", "::/0"], 1, f"# syncd-owner: {key_line(2)}\n")
    report = check(network, SEED_POLICY)
    assert found(report) == [("hosts/my_laptop", 2, "owner-invalid"), ("hosts/my_pc", 3, "owner-invalid")]
    assert report.failed()
    assert "'#syncd-owner:' looks like an owner line" in report.findings[1].message


def test_syncd_check_reports_owner_lines(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    laptop = repo / "hosts" / "my_laptop"
    laptop.write_text(f"# syncd-owner: {key_line(3)} me@laptop\n" + laptop.read_text())
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(repo)], out, err) == 0
    laptop.write_text("# syncd-owner ssh-ed25519 AAAA\n" + laptop.read_text())
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(repo)], out, err) == 1
    assert out.getvalue().startswith(
        "hosts/my_laptop:1: error[owner-invalid]: '# syncd-owner ' looks like an owner line"
    )
