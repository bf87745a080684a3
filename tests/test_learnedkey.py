"""The rule for the Ed25519 key tincd 1.1 appends to a peer's host file
(``learnedkey``): exactly tinc's block on top of the repository's version,
and nothing else, counts as that version."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.tinc.learnedkey import appended_key, split_appended
from tests.keyfactory import ed25519_text, rsa_pem

# What append_config_file() (tinc's src/conf.c) writes, with
# fprintf(fp, "\n# The following line was automatically added by tinc\n%s = %s\n", key, value)
TINC_FORMAT = "\n# The following line was automatically added by tinc\n%s = %s\n"

REPO = f"Subnet = 2002:102:304:4::/64\n\n{rsa_pem(seed=1)}".encode()
KEY = ed25519_text(1)
OTHER = ed25519_text(2)


def block(key: str = KEY) -> bytes:
    return (TINC_FORMAT % ("Ed25519PublicKey", key)).encode()


def test_tincs_block_is_the_repository_version_plus_a_key() -> None:
    assert appended_key(REPO, REPO + block()) == KEY
    assert split_appended(REPO + block()) == (REPO, KEY)


def test_tinc_appends_twice_when_a_key_request_and_a_handshake_cross() -> None:
    assert appended_key(REPO, REPO + block() + block()) == KEY
    assert split_appended(REPO + block() + block()) == (REPO, KEY)


def test_a_file_without_a_final_newline_gets_tincs_leading_one() -> None:
    repo = REPO + b"Address = 198.51.100.1"
    assert appended_key(repo, repo + block()) == KEY


@pytest.mark.parametrize(
    ("why", "installed"),
    [
        ("two different keys", REPO + block() + block(OTHER)),
        ("no block at all", REPO),
        ("another comment", REPO + block().replace(b"by tinc", b"by me")),
        ("no blank line before the comment", REPO + block()[1:]),
        ("the key line alone", REPO + f"Ed25519PublicKey = {KEY}\n".encode()),
        ("spelled differently", REPO + block().replace(b"PublicKey = ", b"PublicKey=")),
        ("a CRLF line end", REPO + block()[:-1] + b"\r\n"),
        ("something after the block", REPO + block() + b"Subnet = 10.0.0.0/8\n"),
        ("an extra blank line", REPO + block() + b"\n"),
        ("a change above the block", REPO.replace(b"::/64", b"::/63") + block()),
        ("a truncated key", REPO + block(KEY[:-1] + "\n")[:-1]),
        ("not tinc's base64", REPO + block(KEY[:-1] + "!")),
        ("bits beyond the 32 key bytes", REPO + block(KEY[:-1] + "/")),
    ],
)
def test_anything_else_is_drift(why: str, installed: bytes) -> None:
    assert appended_key(REPO, installed) is None, why


@pytest.mark.parametrize(
    "repo",
    [
        REPO + f"Ed25519PublicKey = {OTHER}\n".encode(),  # another key: tinc would not have learned one
        REPO + f"Ed25519PublicKey = {KEY}\n".encode(),  # the same key: tinc had it already
        REPO + f"ed25519publickey={OTHER}\n".encode(),  # tincd reads variable names case-blind
        REPO + b"Ed25519PublicKeyFile = /etc/tinc/inet6/hosts/peer.pub\n",
        REPO + b"-----BEGIN ED25519 PUBLIC KEY-----\nAAAA\n-----END ED25519 PUBLIC KEY-----\n",
    ],
)
def test_a_key_beside_one_the_repository_names_is_drift(repo: bytes) -> None:
    assert appended_key(repo, repo + block()) is None


@pytest.mark.parametrize(
    "repo",
    [
        REPO + b"-----BEGIN RSA PUBLIC KEY-----\nMIIB\n",  # an unterminated PEM block swallows the rest
        REPO + b"Port\n",  # a variable without a value: tincd stops reading there
    ],
)
def test_a_block_tincd_would_not_read_is_drift(repo: bytes) -> None:
    assert appended_key(repo, repo + block()) is None


LINES = st.sampled_from(
    [
        b"Subnet = 10.0.0.0/24\n",
        b"Address = 198.51.100.1\n",
        b"# a comment\n",
        b"\n",
        b"Ed25519PublicKey = " + KEY.encode() + b"\n",
        block(),
        block(OTHER),
        b"Port\n",
        b"-----BEGIN ED25519 PUBLIC KEY-----\n",
        b"-----END ED25519 PUBLIC KEY-----\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(repo=st.lists(LINES, max_size=6).map(b"".join), tail=st.lists(LINES, max_size=4).map(b"".join))
def test_only_whole_blocks_of_one_key_on_a_keyless_file_count(repo: bytes, tail: bytes) -> None:
    key = appended_key(repo, repo + tail)
    if key is not None:
        count = len(tail) // len(block(key))
        assert tail == block(key) * count and count >= 1
        # no key tincd reads: no Ed25519PublicKey line, no ED25519 block (an END line alone is ignored)
        assert b"Ed25519PublicKey" not in repo and b"-----BEGIN ED25519" not in repo
        assert split_appended(repo + tail) == (repo, key)
