"""Subnet parsing against every form docs/host-files.md lists, and the overlap sweep."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.tinc.overlap import Claim, overlapping_pairs
from syncd.tinc.subnet import (
    Kind,
    Subnet,
    SubnetError,
    format_subnet,
    is_short_mac,
    parse_subnet,
)


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def v6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


# docs/host-files.md, "Subnets": accepted by tincd 1.0.36, with what tincd reads.
ACCEPTED = [
    ("10.0.0.0/24", Subnet(Kind.IPV4, v4("10.0.0.0"), 24)),
    ("10.0.0.1", Subnet(Kind.IPV4, v4("10.0.0.1"), 32)),
    ("10.0.0.0/24#5", Subnet(Kind.IPV4, v4("10.0.0.0"), 24, 5)),
    ("0.0.0.0/0", Subnet(Kind.IPV4, 0, 0)),
    ("2001:db8::/32", Subnet(Kind.IPV6, v6("2001:db8::"), 32)),
    ("2001:DB8::/32", Subnet(Kind.IPV6, v6("2001:db8::"), 32)),
    ("::/0", Subnet(Kind.IPV6, 0, 0)),
    ("::1", Subnet(Kind.IPV6, 1, 128)),
    ("::ffff:10.0.0.0/120", Subnet(Kind.IPV6, v6("::ffff:10.0.0.0"), 120)),
    ("2001:db8:0:0:0:0:0:0/32", Subnet(Kind.IPV6, v6("2001:db8::"), 32)),
    ("00:11:22:33:44:55", Subnet(Kind.MAC, 0x001122334455, 48)),
    ("0:1a:2b:3c:4d:5e#3", Subnet(Kind.MAC, 0x001A2B3C4D5E, 48, 3)),
    # the reference network
    ("2002:0102:0304:0000:0:0:0:0/64", Subnet(Kind.IPV6, v6("2002:102:304::"), 64)),
    ("2002:102:304:4::/64", Subnet(Kind.IPV6, v6("2002:102:304:4::"), 64)),
    # weights may be negative; zero-padded IPv6 groups are plain IPv6
    ("10.1.0.0/16#-3", Subnet(Kind.IPV4, v4("10.1.0.0"), 16, -3)),
    ("fd21:b4dc:4b00::a38:0252/128", Subnet(Kind.IPV6, v6("fd21:b4dc:4b00::a38:252"), 128)),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_accepted_forms(text: str, expected: Subnet) -> None:
    assert parse_subnet(text) == expected


# docs/host-files.md, "Subnets": refused by tincd 1.0.36, with the finding code syncd gives.
REJECTED = [
    ("10.0.0.1/24", "subnet-host-bits"),
    ("2001:db8::1/32", "subnet-host-bits"),
    ("10.0.0.0/33", "subnet-invalid"),
    ("10.0.0.0/24 #5", "subnet-invalid"),
    ("10.0.0.0/24#", "subnet-invalid"),
    ("256.0.0.1", "subnet-invalid"),
    ("10.0.0", "subnet-invalid"),
    ("2001:db8::1::2", "subnet-invalid"),
    ("[2001:db8::1]", "subnet-invalid"),
    ("fe80::1%eth0", "subnet-invalid"),
    ("00:11:22:33:44:55/48", "subnet-invalid"),
    ("gateway.example.org", "subnet-invalid"),
    ("= 10.0.0.0/24", "subnet-invalid"),  # "Subnet == x" gives the value "= x"
    ("10.0.0.0/24 # office", "subnet-invalid"),  # no trailing comments
    ("", "subnet-invalid"),
    ("2001:db8::/129", "subnet-invalid"),
    ("10.0.0.0/-1", "subnet-invalid"),
    ("10.0.0.0#5/24", "subnet-invalid"),
]


@pytest.mark.parametrize(("text", "code"), REJECTED)
def test_rejected_forms(text: str, code: str) -> None:
    with pytest.raises(SubnetError) as info:
        parse_subnet(text)
    assert info.value.code == code


def test_host_bits_message_suggests_the_network() -> None:
    with pytest.raises(SubnetError, match=r"did you mean 10\.0\.0\.0/24\?"):
        parse_subnet("10.0.0.1/24")


# docs/host-files.md, "Subnets": what tincd 1.0.36 reads but newer tinc refuses: flagged, and
# the message says what tincd 1.0 actually reads.
QUIRKS = [
    ("+10.0.0.1", "10.0.0.1"),
    ("010.000.000.001", "10.0.0.1"),
    ("65537.0.0.1", "1.0.0.1"),
    ("10.0.0.0/ 24", "10.0.0.0/24"),
    ("10.0.0.0/24#+5", "10.0.0.0/24#5"),
    ("2001:0db8:00000::/32", "2001:db8::/32"),
    ("0x10::/16", "10::/16"),
]


@pytest.mark.parametrize(("text", "read_as"), QUIRKS)
def test_lenient_tinc10_forms_are_flagged_with_their_reading(text: str, read_as: str) -> None:
    with pytest.raises(SubnetError) as info:
        parse_subnet(text)
    assert info.value.code == "subnet-invalid"
    assert f"tincd 1.0 reads it as {read_as} " in info.value.message


def test_six_short_groups_are_a_mac_address() -> None:
    # docs/host-files.md: "1:2:3:4:5:6" is read as a MAC; accepted, but the checker warns.
    assert parse_subnet("1:2:3:4:5:6") == Subnet(Kind.MAC, 0x010203040506, 48)
    assert is_short_mac("1:2:3:4:5:6")
    assert is_short_mac("0:1a:2b:3c:4d:5e#3")
    assert not is_short_mac("00:11:22:33:44:55")
    assert not is_short_mac("10.0.0.1")


@pytest.mark.parametrize(
    "text",
    ["10.0.0.0/24", "10.0.0.1", "2001:db8::/32", "::/0", "00:11:22:33:44:55", "10.0.0.0/24#5", "::1", "0.0.0.0/0"],
)
def test_format_round_trips(text: str) -> None:
    assert format_subnet(parse_subnet(text)) == text


def test_value_object_validates() -> None:
    with pytest.raises(ValueError, match="host bits"):
        Subnet(Kind.IPV4, v4("10.0.0.1"), 24)
    with pytest.raises(ValueError, match="prefix length"):
        Subnet(Kind.IPV4, 0, 33)


def test_containment() -> None:
    outer, inner = parse_subnet("2002:102:304::/48"), parse_subnet("2002:102:304:4::/64")
    assert outer.contains(inner) and not inner.contains(outer)
    assert parse_subnet("::/0").contains(inner)
    assert not parse_subnet("0.0.0.0/0").contains(inner)  # other family


# --- overlap sweep ------------------------------------------------------------


def claims(*items: tuple[str, str]) -> list[Claim]:
    return [Claim.of(parse_subnet(text), node, i + 1) for i, (node, text) in enumerate(items)]


def pairs(found: list[Claim]) -> set[tuple[str, str, str, str]]:
    return {(o.node, format_subnet(o.subnet), i.node, format_subnet(i.subnet)) for o, i in overlapping_pairs(found)}


def test_sweep_finds_nested_and_identical_pairs_only_across_nodes() -> None:
    found = claims(
        ("gateway", "::/0"),
        ("gateway", "2002:102:304::/64"),
        ("my_pc", "2002:102:304:4::/64"),
        ("evil", "2002:102:304:4::/62"),
        ("a", "10.0.0.1"),
        ("b", "10.0.0.1"),
        ("a", "10.0.0.0/24"),
        ("c", "00:11:22:33:44:55"),
        ("d", "00:11:22:33:44:55"),
        ("e", "10.1.0.0/16"),
    )
    assert pairs(found) == {
        ("gateway", "::/0", "my_pc", "2002:102:304:4::/64"),
        ("gateway", "::/0", "evil", "2002:102:304:4::/62"),
        ("evil", "2002:102:304:4::/62", "my_pc", "2002:102:304:4::/64"),
        ("a", "10.0.0.0/24", "b", "10.0.0.1"),
        ("a", "10.0.0.1", "b", "10.0.0.1"),
        ("c", "00:11:22:33:44:55", "d", "00:11:22:33:44:55"),
    }


_subnets = st.one_of(
    st.builds(
        lambda a, n: Subnet(Kind.IPV4, a & ~((1 << (32 - n)) - 1), n),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    ),
    st.builds(
        lambda a, n: Subnet(Kind.IPV6, (a << 96) & ~((1 << (128 - n)) - 1), n),
        st.integers(0, 2**32 - 1),
        st.integers(0, 40),
    ),
    st.builds(lambda a: Subnet(Kind.MAC, a, 48), st.integers(0, 7)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), _subnets), max_size=40))
def test_sweep_equals_pairwise_comparison(items: list[tuple[str, Subnet]]) -> None:
    found = [Claim.of(s, node, i) for i, (node, s) in enumerate(items)]
    swept = {(o.line, i.line) for o, i in overlapping_pairs(found)}
    brute = {
        frozenset((x.line, y.line))
        for x, y in itertools.combinations(found, 2)
        if x.node != y.node and x.subnet.overlaps(y.subnet)
    }
    assert {frozenset(p) for p in swept} == brute
    assert len(swept) == len(brute)  # each pair once
    by_line = {c.line: c for c in found}
    for outer, inner in swept:
        assert by_line[outer].subnet.contains(by_line[inner].subnet)


_subnet_text = st.text(alphabet="0123456789abcdefABCDEF:./#-+ x", min_size=1, max_size=45)


@settings(max_examples=2000, deadline=None)
@given(_subnet_text)
def test_strict_parser_agrees_with_tincd_10(text: str) -> None:
    """Whatever syncd accepts, tincd 1.0's str2net() reads as the same subnet."""
    from syncd.tinc.subnet import _lenient_tinc10

    try:
        strict = parse_subnet(text)
    except SubnetError:
        return
    assert _lenient_tinc10(text) == strict


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(lambda a: str(a).split("%")[0]),
    ),
    st.integers(0, 128),
)
def test_every_address_and_length_is_parsed_or_flagged_like_ipaddress(address: str, prefixlen: int) -> None:
    text = f"{address}/{prefixlen}"
    network = ipaddress.ip_network(address).version
    bits = 32 if network == 4 else 128
    try:
        subnet = parse_subnet(text)
    except SubnetError as exc:
        if prefixlen > bits:
            assert exc.code == "subnet-invalid"
        else:
            assert exc.code == "subnet-host-bits"
            assert ipaddress.ip_network(text, strict=False).network_address != ipaddress.ip_address(address)
        return
    assert prefixlen <= bits
    assert ipaddress.ip_network(text) == ipaddress.ip_network(format_subnet(subnet))
