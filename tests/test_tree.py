"""One tree, one check: the policy fallback, the desired files, the label."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.cli.worktree import WorkTree, run_check
from syncd.errors import UsageError
from syncd.rules.policy import DEFAULT_POLICY, policy_of
from syncd.rules.tree import EntryKind, Snapshot, TreeEntry, snapshot
from syncd.rules.validate import check_tree

KEY = "Ed25519PublicKey = 3q1Pq3wLCP6U5M/3FyHTbnT5C0sGQmdiqzIzNNqIpNG\n"


def entry(name: str, data: bytes) -> TreeEntry:
    return TreeEntry(name, EntryKind.FILE, len(data), data)


def test_no_policy_file_is_the_default_policy() -> None:
    assert policy_of(None) == (DEFAULT_POLICY, [])
    report, _ = check_tree(Snapshot("t", None, ()))
    assert report.policy is DEFAULT_POLICY and report.findings == ()


def test_the_desired_files_are_the_valid_nodes_only() -> None:
    good = f"Subnet = 10.0.0.1\n{KEY}".encode()
    tree = Snapshot(
        "t",
        b"tinc: '1.1'\n",
        (
            entry("good", good),
            entry("bad-name", good),
            entry(".gitkeep", b""),
            TreeEntry("l", EntryKind.SYMLINK, 0, None),
        ),
    )
    report, desired = check_tree(tree)
    assert desired == {"good": good}
    assert sorted(f.code for f in report.findings) == ["file-type", "name-invalid"]
    assert report.policy.tinc == "1.1" and report.policy_findings == ()


def test_policy_findings_are_kept_apart_from_the_mentions() -> None:
    report, _ = check_tree(Snapshot("t", b"max_file_bytes: x\nroutes: {ghost: ['10.0.0.0/8']}\n", ()))
    assert [f.line for f in report.policy_findings] == [1]  # the syntax of syncd.yaml only
    assert [(f.line, f.code) for f in report.findings] == [(1, "policy-invalid"), (2, "policy-invalid")]


def test_an_installed_directory_is_named_by_its_label(tmp_path: Path) -> None:
    (tmp_path / "a-up").write_text("#!/bin/sh\n")
    (tmp_path / "a b").write_text("")
    report, _ = check_tree(WorkTree(hosts_dir=tmp_path), installed=True)
    assert [(f.path, f.code) for f in report.findings] == [(f"{tmp_path}/a b", "name-invalid")]


def test_a_work_tree_reads_its_policy_and_its_hosts_dir(tmp_path: Path) -> None:
    (tmp_path / "syncd.yaml").write_text("hosts_dir: nodes\nmax_file_bytes: 1024\n")
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "big").write_bytes(b"#" * 1025)
    tree = snapshot(WorkTree(tmp_path))
    assert tree.entries == (TreeEntry("big", EntryKind.FILE, 1025, None),)
    report, desired = check_tree(tree)
    assert [(f.path, f.code) for f in report.findings] == [("nodes/big", "file-too-large")] and desired == {}


def test_a_missing_repository_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        run_check(tmp_path / "nope", None)
