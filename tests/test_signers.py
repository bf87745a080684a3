"""SSHSIG verification against signatures made by real ssh-keygen and git."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import AllowedSignersError, SignatureError
from syncd.signing.allowed_signers import match_pattern, match_pattern_list, parse_allowed_signers, verify_signed_object
from syncd.signing.sshsig import parse_signature, verify
from tests.gitutil import SshKey, allowed_signers, commit, git, init_repo, make_key, verify_with_git

KEY_KINDS = [("ed25519", None), ("ecdsa", 256), ("ecdsa", 384), ("ecdsa", 521), ("rsa", 2048)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SshKey]:
    directory = tmp_path_factory.mktemp("keys")
    return {f"{kind}{bits or ''}": make_key(directory, f"{kind}{bits or ''}", kind, bits) for kind, bits in KEY_KINDS}


def ssh_sign(key: SshKey, message: Path, namespace: str = "git", hash_alg: str | None = None) -> bytes:
    args = ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key.private)]
    if hash_alg:
        args += ["-O", f"hashalg={hash_alg}"]
    subprocess.run([*args, str(message)], check=True, capture_output=True)
    return message.with_name(message.name + ".sig").read_bytes()


@pytest.mark.parametrize("name", [f"{k}{b or ''}" for k, b in KEY_KINDS])
@pytest.mark.parametrize("hash_alg", ["sha256", "sha512"])
def test_ssh_keygen_signatures_verify(keys: dict[str, SshKey], name: str, hash_alg: str, tmp_path: Path) -> None:
    message = tmp_path / "msg"
    message.write_bytes(b"Subnet = 2002:102:304:4::/64\n")
    sig = parse_signature(ssh_sign(keys[name], message, hash_alg=hash_alg))
    assert sig.hash_algorithm == hash_alg
    verify(sig, message.read_bytes(), "git")
    with pytest.raises(SignatureError, match="bad signature"):
        verify(sig, message.read_bytes() + b"x", "git")


def test_rsa_signatures_are_rsa_sha2(keys: dict[str, SshKey], tmp_path: Path) -> None:
    message = tmp_path / "msg"
    message.write_bytes(b"x")
    sig = parse_signature(ssh_sign(keys["rsa2048"], message))
    sig_type = sig.signature[4 : 4 + int.from_bytes(sig.signature[:4], "big")]
    assert sig_type in (b"rsa-sha2-256", b"rsa-sha2-512")


def test_sha1_rsa_signature_is_refused(keys: dict[str, SshKey], tmp_path: Path) -> None:
    message = tmp_path / "msg"
    message.write_bytes(b"x")
    sig = parse_signature(ssh_sign(keys["rsa2048"], message))
    inner = sig.signature
    n = int.from_bytes(inner[:4], "big")
    forged = type(sig)(sig.public_key, sig.namespace, sig.hash_algorithm, b"\0\0\0\x07ssh-rsa" + inner[4 + n :], b"")
    with pytest.raises(SignatureError, match="SHA-1 is refused"):
        verify(forged, b"x", "git")


def test_wrong_namespace(keys: dict[str, SshKey], tmp_path: Path) -> None:
    message = tmp_path / "msg"
    message.write_bytes(b"x")
    sig = parse_signature(ssh_sign(keys["ed25519"], message, namespace="file"))
    with pytest.raises(SignatureError, match="namespace 'file'"):
        verify(sig, b"x", "git")


def test_truncated_and_garbled_signatures(keys: dict[str, SshKey], tmp_path: Path) -> None:
    message = tmp_path / "msg"
    message.write_bytes(b"x")
    armored = ssh_sign(keys["ed25519"], message)
    lines = armored.strip().splitlines()
    raw = base64.b64decode(b"".join(lines[1:-1]))
    for cut in (10, 30, len(raw) - 5):
        body = base64.encodebytes(raw[:cut])
        with pytest.raises(SignatureError, match="truncated"):
            parse_signature(lines[0] + b"\n" + body + lines[-1])
    with pytest.raises(SignatureError, match="base64"):
        parse_signature(lines[0] + b"\n!!!!\n" + lines[-1])
    with pytest.raises(SignatureError, match="armour"):
        parse_signature(b"-----BEGIN PGP SIGNATURE-----\n")


ALLOWED_OK = """
# admins
alice@example.org {ed}
"bob@example.org,carol@example.org" namespaces="git,file" {ec}
dave@example.org valid-after="20240101",valid-before="20991231235959Z" {ed}
*@example.org namespaces="!git,*" {ec}
"""


def test_allowed_signers_format(keys: dict[str, SshKey]) -> None:
    text = ALLOWED_OK.format(ed=keys["ed25519"].public_line(), ec=keys["ecdsa256"].public_line())
    signers = parse_allowed_signers(text, "f")
    assert [s.principals for s in signers] == [
        ("alice@example.org",),
        ("bob@example.org", "carol@example.org"),
        ("dave@example.org",),
        ("*@example.org",),
    ]
    assert signers[1].namespaces == "git,file" and signers[1].allows_namespace("git")
    assert not signers[3].allows_namespace("git") and signers[3].allows_namespace("file")
    assert signers[2].valid_after is not None and signers[2].valid_before is not None
    assert signers[2].valid_at(int(time.time()))
    assert [s.line for s in signers] == [3, 4, 5, 6]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice@example.org cert-authority {ed}", "cert-authority is not supported"),
        ("alice@example.org sk-ssh-ed25519@openssh.com AAAA", "security-key"),
        ("alice@example.org ssh-ed25519-cert-v01@openssh.com AAAA", "certificates are not supported"),
        ('alice@example.org valid-after="2024" {ed}', "YYYYMMDD"),
        ('alice@example.org frobnicate="x" {ed}', "unknown option"),
        ("alice@example.org ssh-ed25519 !!!", "base64"),
        ("alice@example.org", "expected"),
        ('"alice@example.org {ed}', "unterminated quote"),
        ("alice@example.org ssh-rsa {ed_blob}", "key type ssh-rsa but the key is ssh-ed25519"),
        ("alice@example.org namespaces=git {ed}", "namespaces= needs a double-quoted value"),
        ('alice@example.org namespaces="git", {ed}', "the options end with a comma"),
        ('alice@example.org namespaces="git",Namespaces="file" {ed}', "more than one namespaces option"),
        ('alice@example.org valid-after="20300101",valid-before="20200101" {ed}', "valid-before is not after"),
        ("alice@example.org,,bob@example.org {ed}", "empty principal"),
        ('alice@example.org namespaces="git" ssh-dss AAAA', "key type 'ssh-dss' is not supported"),
    ],
)
def test_allowed_signers_errors_name_the_line(keys: dict[str, SshKey], line: str, message: str) -> None:
    ed = keys["ed25519"].public_line()
    text = "# header\n" + line.format(ed=ed, ed_blob=ed.split()[1]) + "\n"
    with pytest.raises(AllowedSignersError, match=message) as info:
        parse_allowed_signers(text, "/etc/syncd/inet6.allowed_signers")
    assert info.value.message.startswith("/etc/syncd/inet6.allowed_signers:2:")
    assert info.value.exit_code == 2


# --- git commits -------------------------------------------------------------------


def commit_parts(repo: Path, rev: str) -> tuple[bytes, bytes | None, int]:
    from dulwich.repo import Repo

    with Repo(str(repo)) as r:
        c = r[rev.encode()]
        payload, sig, _ = c.extract_signature()  # type: ignore[attr-defined]
        return payload, sig, c.commit_time  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", [f"{k}{b or ''}" for k, b in KEY_KINDS])
def test_git_signed_commits_agree_with_git_verify_commit(keys: dict[str, SshKey], name: str, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "f").write_text("x\n")
    rev = commit(repo, "signed", keys[name])
    signers_file = allowed_signers(tmp_path / "allowed", (keys[name], ""))
    signers = parse_allowed_signers(signers_file.read_text())
    payload, sig, when = commit_parts(repo, rev)
    verified = verify_signed_object(payload, sig, signers, when)
    assert verified.principal == keys[name].principal
    assert verify_with_git(repo, rev, signers_file)


def test_commit_verdicts_match_git(keys: dict[str, SshKey], tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "f").write_text("x\n")
    good = commit(repo, "good", keys["ed25519"])
    (repo / "f").write_text("y\n")
    unsigned = commit(repo, "unsigned", None)
    (repo / "f").write_text("z\n")
    stranger = commit(repo, "stranger", keys["ecdsa384"])
    old = commit(repo, "dated", keys["ecdsa256"], date="2020-01-01T00:00:00Z", allow_empty=True)
    signers_file = allowed_signers(
        tmp_path / "allowed", (keys["ed25519"], ""), (keys["ecdsa256"], 'valid-after="20230101"')
    )
    signers = parse_allowed_signers(signers_file.read_text())
    cases = {
        good: None,
        unsigned: "not signed",
        stranger: "not an allowed signer",
        old: "not valid at 2020-01-01",
    }
    for rev, problem in cases.items():
        payload, sig, when = commit_parts(repo, rev)
        if problem is None:
            verify_signed_object(payload, sig, signers, when)
        else:
            with pytest.raises(SignatureError, match=problem):
                verify_signed_object(payload, sig, signers, when)
        assert verify_with_git(repo, rev, signers_file) == (problem is None), rev


def test_tampered_commit_payload(keys: dict[str, SshKey], tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "f").write_text("x\n")
    rev = commit(repo, "signed", keys["ed25519"])
    signers = parse_allowed_signers(allowed_signers(tmp_path / "a", (keys["ed25519"], "")).read_text())
    payload, sig, when = commit_parts(repo, rev)
    tampered = payload.replace(b"signed", b"signeD")
    with pytest.raises(SignatureError, match="bad signature"):
        verify_signed_object(tampered, sig, signers, when)
    git(repo, "log", "-1")  # the repository itself is untouched


# --- the matcher against match.c's own recursive algorithm ----------------------------


def c_match_pattern(s: bytes, pattern: bytes) -> bool:
    """match.c match_pattern(), transcribed statement by statement."""
    i = j = 0
    while True:
        if j == len(pattern):
            return i == len(s)
        if pattern[j] == ord("*"):
            while j < len(pattern) and pattern[j] == ord("*"):
                j += 1
            if j == len(pattern):
                return True
            if pattern[j] not in b"?*":
                return any(
                    s[k] == pattern[j] and c_match_pattern(s[k + 1 :], pattern[j + 1 :]) for k in range(i, len(s))
                )
            return any(c_match_pattern(s[k:], pattern[j:]) for k in range(i, len(s)))
        if i == len(s):
            return False
        if pattern[j] != ord("?") and pattern[j] != s[i]:
            return False
        i, j = i + 1, j + 1


def c_match_pattern_list(string: bytes, pattern: bytes) -> int:
    """match.c match_pattern_list() with dolower 0: -1, 0 or 1."""
    got_positive, i = 0, 0
    while i < len(pattern):
        negated = pattern[i] == ord("!")
        i += negated
        sub = bytearray()
        while i < len(pattern) and len(sub) < 1023 and pattern[i] != ord(","):
            sub.append(pattern[i])
            i += 1
        if len(sub) >= 1023:
            return 0
        if i < len(pattern) and pattern[i] == ord(","):
            i += 1
        if c_match_pattern(string, bytes(sub)):
            if negated:
                return -1
            got_positive = 1
    return got_positive


WORDS = st.text(alphabet="ab*?![]", max_size=10)


@settings(max_examples=2000, deadline=None)
@given(WORDS, WORDS)
def test_match_pattern_is_match_c(string: str, pattern: str) -> None:
    assert match_pattern(string.encode(), pattern.encode()) == c_match_pattern(string.encode(), pattern.encode())


@settings(max_examples=2000, deadline=None)
@given(WORDS, st.text(alphabet="ab*?![],", max_size=14))
def test_match_pattern_list_is_match_c(string: str, patterns: str) -> None:
    assert match_pattern_list(string, patterns) == (c_match_pattern_list(string.encode(), patterns.encode()) == 1)


def test_match_pattern_list_subpattern_limit() -> None:
    for size, expected in ((1022, True), (1023, False)):
        pattern = "a" * size
        assert match_pattern_list("a" * size, pattern) is expected
        assert match_pattern_list("a" * size, f"*,{pattern}") is expected  # a long one fails the whole list
        assert (c_match_pattern_list(("a" * size).encode(), f"*,{pattern}".encode()) == 1) is expected


def test_match_pattern_does_not_backtrack_exponentially() -> None:
    started = time.monotonic()
    assert not match_pattern(b"a" * 2000, b"*a" * 40 + b"b")
    assert time.monotonic() - started < 5
