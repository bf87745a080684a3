"""Commit objects split as git splits them, and signed commits accepted only
in git's own encoding: a re-encoded copy verifies under another id, so it
must never be recorded (it would fork the node away from the honest history)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from syncd.signing.commits import armor, split_commit
from tests.gitutil import SshKey, allowed_signers, commit, git, init_repo, make_key, verify_with_git


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, str, SshKey, Path]:
    key = make_key(tmp_path / "keys", "admin")
    signers = allowed_signers(tmp_path / "allowed_signers", (key, ""))
    repo = init_repo(tmp_path / "repo")
    (repo / "f").write_text("x\n")
    sha = commit(repo, "a signed commit\n\nwith a body", key)
    return repo, sha, key, signers


def raw(repo: Path, sha: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), "cat-file", "commit", sha], capture_output=True, check=True).stdout


def write_commit(repo: Path, data: bytes) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), "hash-object", "-t", "commit", "-w", "--literally", "--stdin"],
        input=data,
        capture_output=True,
        check=True,
    )
    return result.stdout.decode().strip()


def test_git_written_commit_is_canonical_and_payload_is_what_git_signed(signed: tuple[Path, str, SshKey, Path]) -> None:
    repo, sha, _, _ = signed
    data = raw(repo, sha)
    result = split_commit(data)
    assert result.noncanonical is None
    assert result.signature is not None and result.signature.startswith(b"-----BEGIN SSH SIGNATURE-----\n")
    assert armor(result.signature) == result.signature
    # git's own view of the payload: the object without the gpgsig lines
    assert b"gpgsig" not in result.payload
    assert result.payload.endswith(b"\n\na signed commit\n\nwith a body\n")
    head, _sep, message = result.payload.partition(b"\n\n")
    header = b"gpgsig " + result.signature.rstrip(b"\n").replace(b"\n", b"\n ") + b"\n"
    assert head + b"\n" + header + b"\n" + message == data  # the header git inserts, last


def test_unsigned_commit(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "f").write_text("x\n")
    sha = commit(repo, "unsigned", None)
    data = raw(repo, sha)
    assert split_commit(data) == (data, None, None)


def _variants(data: bytes) -> dict[str, bytes]:
    head, _, message = data.partition(b"\n\n")
    lines = head.split(b"\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"gpgsig "))
    sig = lines[start:]
    others = lines[:start]
    body = b"\n\n" + message
    return {
        "blank continuation line": b"\n".join([*others, *sig[:2], b" ", *sig[2:]]) + body,
        "gpgsig-sha256 header added": b"\n".join([*others, *sig, *[b"gpgsig-sha256" + sig[0][6:], *sig[1:]]]) + body,
        "rewrapped armour": b"\n".join(
            [*others, sig[0], b" " + b"".join(s[1:] for s in sig[1:-1]), sig[-1]]  # one long base64 line
        )
        + body,
        "header moved up": b"\n".join([others[0], *sig, *others[1:]]) + body,
        "trailing space": b"\n".join([*others, *sig[:-1], sig[-1] + b" "]) + body,
    }


@pytest.mark.parametrize(
    "how",
    ["blank continuation line", "gpgsig-sha256 header added", "rewrapped armour", "header moved up", "trailing space"],
)
def test_reencoded_copies_are_noncanonical(signed: tuple[Path, str, SshKey, Path], how: str) -> None:
    repo, sha, _, signers = signed
    original = raw(repo, sha)
    copy = _variants(original)[how]
    copy_sha = write_commit(repo, copy)
    assert copy_sha != sha
    result = split_commit(copy)
    assert result.noncanonical is not None, how
    if how != "trailing space":  # git strips the space before verifying, but the bytes differ
        assert result.payload == split_commit(original).payload
    # Whether git itself still accepts the copy (the attack needs it to):
    # recorded here so that a change in git is noticed.
    accepted = verify_with_git(repo, copy_sha, signers)
    assert accepted or how in ("rewrapped armour", "trailing space", "gpgsig-sha256 header added"), how


def test_git_accepts_a_blank_continuation_line(signed: tuple[Path, str, SshKey, Path]) -> None:
    """The attack of the hostile mirror is real: git's own verify-commit
    accepts the re-encoded copy, under a new id."""
    repo, sha, _, signers = signed
    copy_sha = write_commit(repo, _variants(raw(repo, sha))["blank continuation line"])
    assert verify_with_git(repo, copy_sha, signers)
    assert git(repo, "rev-parse", f"{copy_sha}^{{tree}}") == git(repo, "rev-parse", f"{sha}^{{tree}}")
