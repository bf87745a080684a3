"""tinc's base64 and the Ed25519 point check, against hand-computed vectors
from the algorithm in tinc's src/utils.c and against real keys."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from syncd.tinc.keys import KeyFormatError, ed25519_from_text, tinc_b64decode, tinc_b64encode

# b64encode_tinc packs each 3-byte group least significant bit first:
# bytes 00 01 02 → triplet 0x020100 → 6-bit digits 0, 4, 32, 0 → "AEgA",
# where standard base64 gives "AAEC".
VECTORS = [
    (b"", ""),
    (b"\x00\x01\x02", "AEgA"),
    (b"\xff\xff\xff", "////"),
    (b"\x01", "BA"),
    (b"\x01\x02", "BIA"),
    (b"tinc", "0lmbjB"),
]


@pytest.mark.parametrize(("raw", "text"), VECTORS)
def test_known_vectors(raw: bytes, text: str) -> None:
    assert tinc_b64encode(raw) == text
    assert tinc_b64decode(text) == raw


def test_differs_from_standard_base64() -> None:
    assert tinc_b64encode(b"\x00\x01\x02") != base64.b64encode(b"\x00\x01\x02").decode()


def test_url_safe_alphabet_decodes_the_same() -> None:
    assert tinc_b64decode("-_AA") == tinc_b64decode("+/AA")


@given(st.binary(max_size=64))
def test_round_trip(raw: bytes) -> None:
    assert tinc_b64decode(tinc_b64encode(raw)) == raw


def test_bad_characters_and_lengths() -> None:
    with pytest.raises(KeyFormatError, match="alphabet"):
        tinc_b64decode("AB=C")
    with pytest.raises(KeyFormatError, match="whole number"):
        tinc_b64decode("ABCDE")


def test_real_ed25519_keys_decode_to_their_bytes() -> None:
    for _ in range(20):
        raw = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        key = ed25519_from_text(tinc_b64encode(raw))
        assert key.identity == raw and key.algorithm == "ed25519"
        assert tinc_b64decode(tinc_b64encode(raw)) == raw


def test_rfc8032_public_key() -> None:
    # RFC 8032 section 7.1, TEST 1 public key
    raw = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert ed25519_from_text(tinc_b64encode(raw)).identity == raw


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A" * 42, "43 characters"),
        ("A" * 42 + "!", "position 43"),
        ("A" * 42 + "Q", "beyond the 32 key bytes"),  # Q = 16: bit 256 set
        (tinc_b64encode((2**255 - 19).to_bytes(32, "little")), "not a canonical"),
    ],
)
def test_bad_ed25519_texts(text: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message):
        ed25519_from_text(text)
