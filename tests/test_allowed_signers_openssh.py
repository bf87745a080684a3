"""allowed_signers read exactly as OpenSSH reads it, cross-checked against the
real ``ssh-keygen -Y verify`` and ``git verify-commit`` on the same files.

OpenSSH's sshsig.c reads the file with getline(): a line ends at ``\\n`` and
nowhere else, and everything after the key is a comment.  syncd must never
trust a key those tools would not, and refuses (rather than skips) any line
whose meaning an editor would show differently."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import AllowedSignersError, SignatureError
from syncd.signing.allowed_signers import parse_allowed_signers, verify_signed_object
from syncd.signing.sshsig import parse_signature
from tests.gitutil import SshKey, commit, env, init_repo, make_key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SshKey]:
    directory = tmp_path_factory.mktemp("keys")
    return {name: make_key(directory, name) for name in ("alice", "mallory")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SshKey]) -> tuple[Path, dict[str, str]]:
    """One repository with a commit signed by each key."""
    path = init_repo(tmp_path_factory.mktemp("repo") / "r")
    revs = {}
    for name, key in keys.items():
        (path / "f").write_text(f"{name}\n")
        revs[name] = commit(path, f"by {name}", key)
    return path, revs


@pytest.fixture(scope="module")
def sigfile(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SshKey]) -> tuple[Path, Path]:
    """A message and alice's signature over it, namespace git."""
    message = tmp_path_factory.mktemp("sig") / "message"
    message.write_bytes(b"x")
    return message, keygen_sign(keys["alice"], message, "git")


def commit_parts(repo: Path, rev: str) -> tuple[bytes, bytes | None, int]:
    from dulwich.repo import Repo

    with Repo(str(repo)) as r:
        c = r[rev.encode()]
        payload, sig, _ = c.extract_signature()  # type: ignore[attr-defined]
        return payload, sig, c.commit_time  # type: ignore[attr-defined]


def git_verdict(repo: Path, rev: str, signers_file: Path) -> str | None:
    """The principal `git verify-commit` reports, or None when it refuses."""
    result = subprocess.run(
        ["git", "-C", str(repo), "-c", f"gpg.ssh.allowedSignersFile={signers_file}", "verify-commit", rev],
        env=env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        return None
    found = re.search(r'Good "git" signature for (.*) with ', result.stderr)
    assert found, result.stderr
    return found[1]


def syncd_verdict(repo: Path, rev: str, signers_file: Path) -> str | None:
    try:
        signers = parse_allowed_signers(signers_file.read_bytes(), str(signers_file))
        payload, sig, when = commit_parts(repo, rev)
        return verify_signed_object(payload, sig, signers, when).principal
    except (AllowedSignersError, SignatureError):
        return None


# --- a second key hidden in a comment -----------------------------------------------

# Every character str.splitlines() ends a line at, besides \n and \r\n.
SEPARATORS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]


@pytest.mark.parametrize("sep", SEPARATORS, ids=[f"U+{ord(s):04X}" for s in SEPARATORS])
def test_key_hidden_in_a_comment_is_never_trusted(
    keys: dict[str, SshKey], repo: tuple[Path, dict[str, str]], sep: str, tmp_path: Path
) -> None:
    path, revs = repo
    alice, mallory = keys["alice"], keys["mallory"]
    text = f"{alice.principal} {alice.public_line()} alice's laptop{sep}{mallory.principal} {mallory.public_line()}\n"
    signers_file = tmp_path / "allowed_signers"
    signers_file.write_bytes(text.encode())
    # OpenSSH reads one line: alice's key, and a comment it ignores.
    assert git_verdict(path, revs["alice"], signers_file) == alice.principal
    assert git_verdict(path, revs["mallory"], signers_file) is None
    # syncd refuses the whole file, naming the line and the character.
    where = re.escape(f"{signers_file}:1: column {text.index(sep) + 1}: ")
    for data in (text, text.encode()):
        with pytest.raises(AllowedSignersError, match=f"^{where}.*U\\+{ord(sep):04X}"):
            parse_allowed_signers(data, str(signers_file))
    assert syncd_verdict(path, revs["mallory"], signers_file) is None


def test_crlf_line_ends_are_read_as_openssh_reads_them(
    keys: dict[str, SshKey], repo: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    path, revs = repo
    alice, mallory = keys["alice"], keys["mallory"]
    signers_file = tmp_path / "allowed_signers"
    # b64_pton() skips the \r at the end of the key; the last line has no \n.
    signers_file.write_bytes(
        f"# admins\r\n{alice.principal} {alice.public_line()}\r\n{mallory.principal} {mallory.public_line()}\r".encode()
    )
    for who in ("alice", "mallory"):
        assert git_verdict(path, revs[who], signers_file) == keys[who].principal
        assert syncd_verdict(path, revs[who], signers_file) == keys[who].principal
    assert [s.line for s in parse_allowed_signers(signers_file.read_bytes())] == [2, 3]


@pytest.mark.parametrize(
    "char",
    ["\x00", "\x07", "\x1b", "\x7f", "\x9b", "\u200b", "\u202e", "\ufeff", "\u00a0", "\u3000", "\r"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_control_characters_are_an_error_naming_line_and_column(keys: dict[str, SshKey], char: str) -> None:
    line = f"alice@example.org {keys['alice'].public_line()} com{char}ment"
    with pytest.raises(AllowedSignersError, match=rf"^/etc/a:2: column {line.index(char) + 1}: .*U\+{ord(char):04X}"):
        parse_allowed_signers(f"# admins\n{line}\n".encode(), "/etc/a")


def test_tab_is_whitespace_as_in_openssh(keys: dict[str, SshKey]) -> None:
    kind, blob = keys["alice"].public_line().split()
    (signer,) = parse_allowed_signers(f'\talice@example.org\tnamespaces="git"\t{kind}\t{blob}\tcomment\n')
    assert signer.principals == ("alice@example.org",) and signer.namespaces == "git"


def test_bytes_that_are_not_utf8_are_an_error_naming_the_line(keys: dict[str, SshKey]) -> None:
    data = b"# admins\nalice@example.org " + keys["alice"].public_line().encode() + b" Ren\xe9\n"
    column = data.split(b"\n")[1].index(b"\xe9") + 1
    with pytest.raises(AllowedSignersError, match=rf"^/etc/a:2: byte 0xe9 at column {column} is not UTF-8"):
        parse_allowed_signers(data, "/etc/a")


# --- patterns: '*', '?' and '!' only --------------------------------------------------


def keygen_verifies(signers_file: Path, principal: str, namespace: str, message: Path, sig: Path) -> bool:
    result = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(signers_file), "-I", principal, "-n", namespace, "-s", str(sig)],
        input=message.read_bytes(),
        capture_output=True,
        check=False,
        timeout=60,
    )
    return result.returncode == 0


def keygen_sign(key: SshKey, message: Path, namespace: str) -> Path:
    sig = message.with_name(message.name + ".sig")
    sig.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key.private), str(message)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return sig


NAMESPACE_PATTERNS = ["[g]it", "g[i]t", "?it", "gi*", "!git", "*,!git", "git", "*", "file,git", "g?t,!g*x"]
NAMESPACES = ["git", "[g]it", "g[i]t", "!git", "gix"]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_namespace_patterns_agree_with_ssh_keygen(keys: dict[str, SshKey], namespace: str, tmp_path: Path) -> None:
    alice = keys["alice"]
    message = tmp_path / "message"
    message.write_bytes(b"Subnet = 2002:102:304:4::/64\n")
    sig = keygen_sign(alice, message, namespace)
    signers_file = tmp_path / "allowed_signers"
    outcomes = {}
    for pattern in NAMESPACE_PATTERNS:
        signers_file.write_text(f'{alice.principal} namespaces="{pattern}" {alice.public_line()}\n')
        expected = keygen_verifies(signers_file, alice.principal, namespace, message, sig)
        (signer,) = parse_allowed_signers(signers_file.read_bytes())
        assert signer.allows_namespace(namespace) == expected, (pattern, namespace)
        try:
            verify_signed_object(message.read_bytes(), sig.read_bytes(), [signer], int(time.time()), namespace)
            outcomes[pattern] = True
        except SignatureError:
            outcomes[pattern] = False
        assert outcomes[pattern] == expected, (pattern, namespace)
    if namespace == "git":  # brackets are literal; '!' negates and wins
        assert outcomes == {p: p in ("?it", "gi*", "git", "*", "file,git") for p in NAMESPACE_PATTERNS} | {
            "g?t,!g*x": True
        }


PRINCIPAL_CASES = [
    ("[a]lice", "alice"),
    ("[a]lice", "[a]lice"),
    ("a[l]ice", "alice"),
    ("?lice", "alice"),
    ("al*", "alice"),
    ("!alice", "alice"),
    ("!alice", "!alice"),
    ("*,!alice", "alice"),
    ("*,!alice", "bob"),
    ("!bob,a*", "alice"),
    ("a*e,!*x*", "alice"),
    ("a*e,!*x*", "alexe"),
    ("*@example.org", "alice@example.org"),
    ("*@example.org", "*@example.org"),
    ("?", "é"),  # one byte, as in C: 'é' is two
    ("??", "é"),
]


def test_principal_patterns_agree_with_ssh_keygen(keys: dict[str, SshKey], tmp_path: Path) -> None:
    alice = keys["alice"]
    message = tmp_path / "message"
    message.write_bytes(b"x")
    sig = keygen_sign(alice, message, "git")
    signers_file = tmp_path / "allowed_signers"
    outcomes = {}
    for pattern, principal in PRINCIPAL_CASES:
        signers_file.write_text(f"{pattern} {alice.public_line()}\n")
        outcomes[pattern, principal] = keygen_verifies(signers_file, principal, "git", message, sig)
        (signer,) = parse_allowed_signers(signers_file.read_bytes())
        assert signer.allows_principal(principal) == outcomes[pattern, principal], (pattern, principal)
    assert [outcomes[case] for case in PRINCIPAL_CASES[:3]] == [False, True, False]  # brackets are literal


# --- git's two steps: find-principals, then verify -I each principal ------------------

GIT_CASES = [
    # (allowed_signers, with {k} = alice's key), the principal git reports or None
    ("alice@example.org {k}", "alice@example.org"),
    ("*@example.org {k}", "*@example.org"),
    ("!bob,alice {k}", "alice"),
    ("!bob {k}", None),  # the only principal does not match its own pattern list
    ('carol namespaces="file" {k}\nalice {k}', None),  # find-principals stops at carol
    ('alice,bob namespaces="file" {k}\nbob {k}', "bob"),
    ('alice valid-before="20000101" {k}\nbob {k}', "bob"),  # the first line valid now
    ('alice namespaces="[g]it" {k}', None),
    ('alice namespaces="*,!git" {k}', None),
    ('alice namespaces="gi*" {k}', "alice"),
    ('"alice bob" {k}', "alice bob"),
    ('x"alice bob" {k}', "xalice bob"),
    ("alice {k}\n", "alice"),
]


@pytest.mark.parametrize(("text", "principal"), GIT_CASES)
def test_commit_verdict_and_principal_agree_with_git(
    keys: dict[str, SshKey], repo: tuple[Path, dict[str, str]], text: str, principal: str | None, tmp_path: Path
) -> None:
    path, revs = repo
    signers_file = tmp_path / "allowed_signers"
    signers_file.write_text(text.format(k=keys["alice"].public_line()) + "\n")
    assert git_verdict(path, revs["alice"], signers_file) == principal
    assert syncd_verdict(path, revs["alice"], signers_file) == principal


OPTION_CASES = [
    # options, whether ssh-keygen accepts the line (syncd refuses what OpenSSH would skip)
    ('namespaces="git"', True),
    ("namespaces=git", False),  # opt_dequote(): the quotes are mandatory
    (',namespaces="git"', True),  # an empty option is skipped...
    ('namespaces="git",', False),  # ...but not at the end
    ('NAMESPACES="git"', True),
    ('namespaces="git",namespaces="git"', False),
    ('namespaces="git",,valid-after="20200101"', True),
    ('valid-after="20200101UTC"', True),
    ('valid-after="20200101z"', True),
    ('valid-after="19700101Z"', False),  # 0 means "unset" to OpenSSH
    ('valid-after="20300101",valid-before="20200101"', False),
    ('namespaces="file,git",valid-before="20991231235959Z"', True),
    ('frobnicate="x"', False),
    ('namespaces="g\\"it,git"', True),  # \" is a quote inside the value
]


@pytest.mark.parametrize(("options", "accepted"), OPTION_CASES)
def test_options_agree_with_ssh_keygen(keys: dict[str, SshKey], options: str, accepted: bool, tmp_path: Path) -> None:
    alice = keys["alice"]
    message = tmp_path / "message"
    message.write_bytes(b"x")
    sig = keygen_sign(alice, message, "git")
    signers_file = tmp_path / "allowed_signers"
    signers_file.write_text(f"{alice.principal} {options} {alice.public_line()}\n")
    assert keygen_verifies(signers_file, alice.principal, "git", message, sig) == accepted
    try:
        signers = parse_allowed_signers(signers_file.read_bytes(), "f")
        verify_signed_object(message.read_bytes(), sig.read_bytes(), signers, int(time.time()))
        ours = True
    except AllowedSignersError as exc:
        assert exc.message.startswith("f:1: ")
        ours = False
    assert ours == accepted


def test_non_canonical_base64_is_refused_as_openssh_does(tmp_path: Path) -> None:
    key = make_key(tmp_path, "p256", "ecdsa", 256)
    kind, blob = key.public_line().split()
    assert blob.endswith("=") and not blob.endswith("==")  # two spare bits before the padding
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(blob[-2])
    forged = blob[:-2] + alphabet[last | 1] + "="  # same bytes, a spare bit set
    assert forged != blob
    message = tmp_path / "message"
    message.write_bytes(b"x")
    sig = keygen_sign(key, message, "git")
    signers_file = tmp_path / "allowed_signers"
    signers_file.write_text(f"{key.principal} {kind} {forged}\n")
    assert not keygen_verifies(signers_file, key.principal, "git", message, sig)
    with pytest.raises(AllowedSignersError, match=r"^f:1: the ecdsa-sha2-nistp256 key is not valid base64"):
        parse_allowed_signers(signers_file.read_bytes(), "f")


def test_rsa_sha2_key_names_read_an_rsa_key_as_openssh_does(tmp_path: Path) -> None:
    key = make_key(tmp_path, "rsa", "rsa", 2048)
    _, blob = key.public_line().split()
    message = tmp_path / "message"
    message.write_bytes(b"x")
    sig = keygen_sign(key, message, "git")
    signers_file = tmp_path / "allowed_signers"
    for name in ("rsa-sha2-256", "rsa-sha2-512"):
        signers_file.write_text(f"{key.principal} {name} {blob}\n")
        assert keygen_verifies(signers_file, key.principal, "git", message, sig)
        signers = parse_allowed_signers(signers_file.read_bytes())
        assert signers[0].key_type == "ssh-rsa"
        verify_signed_object(message.read_bytes(), sig.read_bytes(), signers, int(time.time()))


# --- differential: random lines against ssh-keygen itself -----------------------------

TOKENS = [
    "alice",
    "*",
    "!alice",
    "a?ice",
    "[a]lice",
    '"alice',
    'alice"',
    '"al ice"',
    'al"ice b"ob',
    ",",
    "alice,bob",
    "alice,,bob",
    'namespaces="git"',
    'namespaces="gi*,!x"',
    'namespaces="[g]it"',
    'namespaces="!git,*"',
    "namespaces=git",
    'NAMESPACES="git"',
    'namespaces="git",namespaces="git"',
    'valid-after="20200101"',
    'valid-before="20200101"',
    'valid-before="20991231Z"',
    ',namespaces="git"',
    'namespaces="git",',
    'namespaces="g\\"it,git"',
    '"',
    "\\",
    "#",
    "comment",
    "cert-authority",
    "ssh-ed25519",
    "ssh-rsa",
    "{blob}",
    "{key}",
    "{key}",
    "{key}",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6),
    st.lists(st.sampled_from([" ", "\t", "  ", ""]), min_size=6, max_size=6),
)
def test_random_lines_never_trust_more_than_ssh_keygen(
    keys: dict[str, SshKey], sigfile: tuple[Path, Path], tokens: list[str], blanks: list[str]
) -> None:
    """One line made of allowed_signers-ish tokens: syncd says yes to
    ``-I alice -n git`` exactly when ssh-keygen does, except that it refuses
    some lines OpenSSH reads (an empty principal in a list)."""
    alice = keys["alice"]
    message, sig = sigfile
    kind, blob = alice.public_line().split()
    line = "".join(t.format(key=f"{kind} {blob}", blob=blob) + b for t, b in zip(tokens, blanks, strict=False))
    signers_file = message.with_name("random_signers")
    signers_file.write_text(line + "\n")
    expected = keygen_verifies(signers_file, "alice", "git", message, sig)
    try:
        signers = parse_allowed_signers(signers_file.read_bytes(), "f")
    except AllowedSignersError as exc:
        assert not expected or "empty principal" in exc.message, (line, exc.message)
        return
    now = int(time.time())
    ours = any(
        s.allows_principal("alice") and s.allows_namespace("git") and s.valid_at(now)
        for s in signers
        if s.public_key == parse_signature(sig.read_bytes()).public_key
    )
    assert ours == expected, line
