"""Real host files of three public tinc networks (tests/corpora/README.md:
``make corpora`` fetches them into tests/corpora, or SYNCD_CORPORA names a copy).

Every expected finding below was checked by hand against the files (see the
comments); nothing else may be reported.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

from syncd.cli.worktree import run_check
from syncd.rules.validate import Report
from syncd.tinc.names import is_node_name
from tests.conftest import skip_module_without_corpora

skip_module_without_corpora()


def check_with_policy(corpora: Path, network: str, policy: str | None, tmp_path: Path) -> Report:
    repo = tmp_path / network
    shutil.copytree(corpora / network / "hosts", repo / "hosts")
    if policy is not None:
        (repo / "syncd.yaml").write_text(policy)
    return run_check(repo, None)


def summary(report: Report, severity: str = "error") -> set[tuple[str, int, str]]:
    return {(f.path.removeprefix("hosts/"), f.line, f.code) for f in report.findings if f.severity == severity}


def test_retiolum(corpora: Path, tmp_path: Path) -> None:
    report = check_with_policy(corpora, "retiolum", "tinc: '1.1'\n", tmp_path)
    assert report.nodes == 235
    assert summary(report) == {
        # 7 names with '-', which tincd rejects (check_id) and never reads
        *{
            (name, 1, "name-invalid")
            for name in (
                "maurice-home",
                "pinpox-ahorn",
                "tcac-0-1",
                "test-all-krebs-modules",
                "test-arch",
                "test-centos6",
                "test-centos7",
            )
        },
        # DUMMYHOST: the BEGIN line is indented (line 3), so the base64 line
        # after it is a variable without a value: tincd stops there (line 4)
        # and never reaches the Ed25519PublicKey on line 17.
        ("DUMMYHOST", 3, "syntax"),
        ("DUMMYHOST", 4, "syntax"),
        ("DUMMYHOST", 1, "key-missing"),
        # "Ed25519PublicKey = Ed25519PublicKey = ..." in two files
        ("glanix9001", 17, "value-invalid"),
        ("savarcast", 13, "value-invalid"),
        # 8 subnets claimed by two files; 2 of them only by files with invalid
        # names (ahorn/pinpox-ahorn, the test-* hosts) which tincd ignores.
        # Each of the 6 others is reported on both files.
        ("aendernix", 1, "subnet-overlap"),  # 10.243.29.172
        ("inspector", 2, "subnet-overlap"),
        ("aland", 1, "subnet-overlap"),  # 10.243.23.42
        ("rojava", 1, "subnet-overlap"),
        ("karakalpakstan", 1, "subnet-overlap"),  # 10.243.161.1
        ("sicily", 1, "subnet-overlap"),
        ("catullus", 1, "subnet-overlap"),  # 10.243.2.3
        ("toum", 1, "subnet-overlap"),
        ("DUMMYHOST", 1, "subnet-overlap"),  # 42:0:3097:d913:5908:197e:e50b:f11b
        ("unispore", 1, "subnet-overlap"),
        ("kabsa", 1, "subnet-overlap"),  # 10.243.2.4
        ("wilde", 1, "subnet-overlap"),
        # identical RSA blocks (and Ed25519 keys where present)
        *{(n, 4, "key-duplicate") for n in ("aland", "rojava", "catullus", "toum", "kabsa", "wilde")},
        *{(n, 18, "key-duplicate") for n in ("aland", "rojava")},
        *{(n, 3, "key-duplicate") for n in ("centauri", "sol", "sterni")},
        *{(n, 17, "key-duplicate") for n in ("centauri", "sol")},
        *{(n, 4, "key-duplicate") for n in ("arcadeomat", "wolf", "kruck", "pepe", "schasch", "workhorse", "workout")},
    }
    kruck = next(f for f in report.findings if f.path == "hosts/kruck" and f.code == "key-duplicate")
    assert "kruck, pepe, schasch, sterni, workhorse, workout" in kruck.message
    # Nodes with an RSA key but no usable Ed25519PublicKey line: tinc 1.1 would
    # append one, and syncd would revert it.  Found here with a plain regex.
    ed_line = re.compile(r"^Ed25519PublicKey\s*=\s*[A-Za-z0-9+/_-]{43}\s*$", re.MULTILINE | re.IGNORECASE)
    expected = {
        path.name
        for path in (corpora / "retiolum" / "hosts").iterdir()
        if is_node_name(path.name)
        and "-----BEGIN" in path.read_text()
        and path.name != "DUMMYHOST"  # its key is never read (see above)
        and not ed_line.search(path.read_text())
    }
    assert summary(report, "warning") == {(name, 1, "key-missing") for name in expected}
    assert len(expected) == 76


def test_retiolum_as_a_tinc_10_network_warns_about_11_variables(corpora: Path, tmp_path: Path) -> None:
    report = check_with_policy(corpora, "retiolum", None, tmp_path)
    unknown = Counter(f.message.split()[0] for f in report.findings if f.code == "variable-unknown")
    assert unknown == {"Ed25519PublicKey": 160, "Weight": 158}


def test_icvpn_1024_bit_keys_are_weak_under_the_default_policy(corpora: Path, tmp_path: Path) -> None:
    report = check_with_policy(corpora, "icvpn", None, tmp_path)
    assert report.nodes == 70 and report.subnets == 0
    weak = {f.path.removeprefix("hosts/") for f in report.findings if f.code == "key-weak"}
    assert weak == {"augsburg1", "berlin1", "dresden1", "leipzig2", "weimar1"}
    assert all("1024 bits" in f.message for f in report.findings if f.code == "key-weak")
    # two hosts carry a tinc 1.1 key in a 1.0 network: true, and only a warning
    assert {(f.path, f.code) for f in report.findings if f.code != "key-weak"} == {
        ("hosts/darmstadt2", "variable-unknown"),
        ("hosts/frankfurt2", "variable-unknown"),
    }


def test_icvpn_is_valid_under_its_own_key_size(corpora: Path, tmp_path: Path) -> None:
    # A tinc 1.0 network with 1024-bit keys.  mayen_koblenz_myk1's key lines end
    # in blanks: OpenSSL reads it, so do we.
    report = check_with_policy(corpora, "icvpn", "tinc: '1.0'\nmin_rsa_bits: 1024\n", tmp_path)
    assert summary(report) == set()
    assert summary(report, "warning") == {("darmstadt2", 3, "variable-unknown"), ("frankfurt2", 3, "variable-unknown")}


def test_ffs_ffsl3_needs_its_shared_prefixes_declared(corpora: Path, tmp_path: Path) -> None:
    report = check_with_policy(corpora, "ffs-ffsl3", None, tmp_path)
    assert report.nodes == 26 and report.subnets == 2082
    assert {f.code for f in report.findings} == {"subnet-overlap"}


def test_ffs_ffsl3_passes_with_a_policy_for_its_segments(corpora: Path, tmp_path: Path) -> None:
    # Freifunk Stuttgart: 32 IPv4 segments (/21 of 10.190.0.0/16) and their
    # IPv6 /64s, each announced by every gateway that serves the segment.
    segments = [f"10.190.{i}.0/21" for i in range(0, 256, 8)] + [f"fd21:b4dc:4b{i:02x}::/64" for i in range(256)]
    policy = (
        "prefixes: [10.190.0.0/16, 10.191.0.0/16, 'fd21:b4dc:4b00::/40']\n"
        # gw04n01 also routes 100.100.0.0/16 (shared address space, RFC 6598)
        "routes: {gw04n01: [100.100.0.0/16]}\n"
        "shared:\n"
        # one anycast address (10.56.0.1 as IPv6) on three gateways
        "  - {subnet: 'fd21:b4dc:4b00::a38:1', nodes: [gw01n03, gw04n01, gw04n02]}\n"
        + "".join(f"  - {{subnet: '{s}', nodes: '*'}}\n" for s in segments)
    )
    report = check_with_policy(corpora, "ffs-ffsl3", policy, tmp_path)
    assert report.findings == ()
    assert report.nodes == 26 and report.subnets == 2082
