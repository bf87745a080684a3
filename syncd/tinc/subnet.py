"""tinc subnets: parsing exactly as tincd does (overlaps: ``syncd.tinc.overlap``).

The grammar mirrors ``str2net()`` in tinc's ``src/subnet_parse.c``:

1. an optional ``#WEIGHT`` is split off at the *first* ``#`` and must be a
   whole integer (``sscanf("%d%n")`` plus a check that nothing follows);
2. an optional ``/LEN`` is split off at the first ``/`` the same way;
3. what is left is tried as a MAC address (six ``%hx`` groups), then as IPv4
   (four ``%hu`` groups), then as IPv6 (``::`` expanded, an embedded dotted
   quad converted, then eight ``%hx`` groups).

``sscanf`` is lenient: ``%hu`` takes a sign, leading zeros and wraps at
65536; ``%d`` skips leading blanks.  tincd 1.0 therefore accepts strings such
as ``+10.0.0.1``, ``010.000.000.001`` or ``65537.0.0.1`` (read as
``1.0.0.1``) that newer tinc and every other tool reject or read differently.
This module parses the strict, unambiguous form; when that fails it asks
``_lenient_tinc10`` how tincd 1.0 would read the string, so that the finding
can say precisely what tincd would do instead of just "invalid".

Pure: no I/O.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from _socket import AF_INET6, inet_pton  # what socket re-exports, without socket.py's enums to build
from typing import NamedTuple

DEFAULT_WEIGHT = 10  # subnet_parse.c: DEFAULT_WEIGHT


class Kind(enum.IntEnum):
    """Subnet families, ordered as tinc orders ``subnet_type_t``."""

    MAC = 0
    IPV4 = 1
    IPV6 = 2


BITS = (48, 32, 128)  # by Kind: a tuple, since an enum member hashes in Python


class _SubnetFields(NamedTuple):
    kind: Kind
    address: int
    prefixlen: int
    weight: int = DEFAULT_WEIGHT


class Subnet(_SubnetFields):
    """One tinc subnet.  ``address`` is the integer value of the address.

    An immutable value that validates when built.  It is a tuple underneath
    because a network has as many of these as lines in its host files:
    ``parse_subnet`` builds the ones it has already validated with
    ``tuple.__new__``, four times cheaper than a dataclass.
    """

    __slots__ = ()

    def __new__(cls, kind: Kind, address: int, prefixlen: int, weight: int = DEFAULT_WEIGHT) -> Subnet:
        bits = BITS[kind]
        if not 0 <= prefixlen <= bits:
            raise ValueError(f"prefix length {prefixlen} out of range for {kind.name}")
        if not 0 <= address < (1 << bits):
            raise ValueError("address out of range")
        if address & ((1 << (bits - prefixlen)) - 1):
            raise ValueError("host bits set")
        return super().__new__(cls, kind, address, prefixlen, weight)

    @property
    def bits(self) -> int:
        return BITS[self.kind]

    @property
    def host_mask(self) -> int:
        return (1 << (self.bits - self.prefixlen)) - 1

    @property
    def first(self) -> int:
        return self.address

    @property
    def last(self) -> int:
        return self.address | self.host_mask

    @property
    def network(self) -> tuple[Kind, int, int]:
        """The subnet without its weight: what routing and overlap look at."""
        return (self.kind, self.address, self.prefixlen)

    def __repr__(self) -> str:
        return f"Subnet({format_subnet(self)!r})"

    def contains(self, other: Subnet) -> bool:
        return (
            self.kind == other.kind
            and self.prefixlen <= other.prefixlen
            and self.first <= other.first
            and other.last <= self.last
        )

    def overlaps(self, other: Subnet) -> bool:
        return self.kind == other.kind and self.first <= other.last and other.first <= self.last

    def __str__(self) -> str:
        return format_subnet(self)


def format_subnet(subnet: Subnet, *, with_weight: bool = True) -> str:
    """The canonical text of a subnet (as ``net2str()`` prints it)."""
    if subnet.kind is Kind.MAC:
        text = ":".join(f"{b:02x}" for b in subnet.address.to_bytes(6, "big"))
    elif subnet.kind is Kind.IPV4:
        text = str(ipaddress.IPv4Address(subnet.address))
        if subnet.prefixlen != 32:
            text += f"/{subnet.prefixlen}"
    else:
        text = str(ipaddress.IPv6Address(subnet.address))
        if subnet.prefixlen != 128:
            text += f"/{subnet.prefixlen}"
    if with_weight and subnet.weight != DEFAULT_WEIGHT:
        text += f"#{subnet.weight}"
    return text


class SubnetError(ValueError):
    """A subnet string tincd would reject, or would read other than written.

    ``code`` is the finding code: ``subnet-invalid`` or ``subnet-host-bits``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- the strict grammar ----------------------------------------------------

# "%d%n" with nothing after it, written plainly (no blanks, no '+').
_INT = re.compile(r"-?[0-9]+\Z")
_PREFIX = re.compile(r"(?:0|[1-9][0-9]{0,2})\Z")
# MAC: six groups of one or two hex digits.  Old tincs print one-digit
# groups (subnet_parse.c keeps accepting them for ADD_SUBNET), so they are
# valid; the checker only warns about them (see ``is_short_mac``).
_MAC = re.compile(r"([0-9A-Fa-f]{1,2})(?::([0-9A-Fa-f]{1,2})){5}\Z")
_MAC_GROUPS = re.compile(r"[0-9A-Fa-f]{1,2}")
# IPv4 dotted quad, decimal, no leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")


def parse_subnet(text: str) -> Subnet:
    """Parse a ``Subnet`` value as tincd does, or raise ``SubnetError``.

    Accepts exactly the unambiguous forms; forms only tincd 1.0's lenient
    ``sscanf`` accepts are errors whose message says how tincd 1.0 reads them.
    """
    try:
        return _parse_strict(text)
    except SubnetError as strict_error:
        if strict_error.code == "subnet-host-bits":
            raise
        lenient = _lenient_tinc10(text)
        if lenient is None:
            raise
        raise SubnetError(
            "subnet-invalid",
            f"{text!r} is not a well-formed subnet; tincd 1.0 reads it as "
            f"{format_subnet(lenient)} but tinc 1.1 and other tools do not: "
            f"write {format_subnet(lenient)}",
        ) from None


def _parse_strict(text: str) -> Subnet:
    rest = text
    weight = DEFAULT_WEIGHT
    if "#" in rest:
        rest, _, weight_text = rest.partition("#")
        if not _INT.match(weight_text):
            raise SubnetError("subnet-invalid", f"weight {weight_text!r} in {text!r} is not an integer")
        weight = int(weight_text)
        if not -(2**31) <= weight < 2**31:
            raise SubnetError("subnet-invalid", f"weight {weight_text} in {text!r} is out of range")
    prefixlen = -1  # none written
    if "/" in rest:
        rest, _, prefix_text = rest.partition("/")
        try:
            prefixlen = _PREFIXES[prefix_text]
        except KeyError:
            raise SubnetError("subnet-invalid", f"prefix length {prefix_text!r} in {text!r} is not a number") from None

    if ":" not in rest:
        try:  # what IPV4_RE matches, four _OCTETS
            a, b, c, d = rest.split(".")
            address = (_OCTETS[a] << 24) | (_OCTETS[b] << 16) | (_OCTETS[c] << 8) | _OCTETS[d]
        except (ValueError, KeyError):
            raise SubnetError("subnet-invalid", f"{text!r} is not a MAC address, IPv4 or IPv6 subnet") from None
        kind, bits = _IPV4, 32
    elif rest.count(":") == 5 and _MAC.match(rest):
        # tincd tries MAC first: six short groups are a MAC, never IPv6
        if prefixlen >= 0:
            raise SubnetError("subnet-invalid", f"{text!r}: a MAC address takes no prefix length")
        kind, bits, address = _MAC_KIND, 48, int("".join(f"{int(g, 16):02x}" for g in rest.split(":")), 16)
    else:
        # inet_pton() accepts exactly the IPv6 forms tincd reads alike
        # (one '::', 1-4 hex digits a group, a dotted quad at the end), and
        # rejects zones and brackets, which tincd rejects too.
        try:
            address = int.from_bytes(inet_pton(AF_INET6, rest), "big")
        except OSError:
            raise SubnetError("subnet-invalid", f"{text!r} is not a valid IPv6 address") from None
        kind, bits = _IPV6, 128

    if prefixlen < 0:
        prefixlen = bits
    elif prefixlen > bits:
        raise SubnetError("subnet-invalid", f"prefix length /{prefixlen} in {text!r} exceeds {bits} bits")
    host_mask = (1 << (bits - prefixlen)) - 1
    if address & host_mask:
        network = Subnet(kind, address & ~host_mask, prefixlen, weight)
        raise SubnetError(
            "subnet-host-bits",
            f'{text!r} has host bits set beyond /{prefixlen} (tincd: "Network address and prefix '
            f'length do not match"); did you mean {format_subnet(network)}?',
        )
    return _new_subnet(Subnet, (kind, address, prefixlen, weight))


_MAC_KIND, _IPV4, _IPV6 = Kind.MAC, Kind.IPV4, Kind.IPV6  # module globals: no enum lookup a subnet
# What _PREFIX and _OCTET match (each number in its one decimal spelling), as
# dictionaries: a lookup costs a fraction of a regular expression's match
# and int(), on every subnet of every file.
_PREFIXES = {str(n): n for n in range(1000)}
_OCTETS = {str(n): n for n in range(256)}

_new_subnet = tuple.__new__  # the fields were validated just above


def is_short_mac(text: str) -> bool:
    """True for a MAC subnet written with one-digit groups (``0:1a:...``)."""
    address = text.partition("#")[0]
    return bool(_MAC.match(address)) and any(len(g) == 1 for g in _MAC_GROUPS.findall(address))


# --- tincd 1.0's lenient reading ---------------------------------------------

_SCANF_WS = " \t\n\v\f\r"


def _scan_int(text: str, pos: int, base: int) -> tuple[int, int] | None:
    """One ``sscanf`` integer conversion (``%d``/``%hu``: base 10, ``%hx``: 16).

    Returns ``(value, end)`` or ``None`` when nothing converts.  ``%hx`` also
    takes a ``0x`` prefix; values are returned unreduced (callers wrap).
    """
    while pos < len(text) and text[pos] in _SCANF_WS:
        pos += 1
    sign = 1
    if pos < len(text) and text[pos] in "+-":
        sign = -1 if text[pos] == "-" else 1
        pos += 1
    digits = "0123456789abcdefABCDEF"[: 10 if base == 10 else 22]
    if base == 16 and text[pos : pos + 2] in ("0x", "0X") and pos + 2 < len(text) and text[pos + 2] in digits:
        pos += 2
    start = pos
    while pos < len(text) and text[pos] in digits:
        pos += 1
    if pos == start:
        return None
    return sign * int(text[start:pos], base), pos


def _scan_groups(text: str, count: int, sep: str, base: int) -> list[int] | None:
    """``count`` integers separated by ``sep``, consuming the whole string."""
    values = []
    pos = 0
    for i in range(count):
        if i:
            if pos >= len(text) or text[pos] != sep:
                return None
            pos += 1
        scanned = _scan_int(text, pos, base)
        if scanned is None:
            return None
        value, pos = scanned
        values.append(value % 65536)  # %hu / %hx store into uint16_t
    return values if pos == len(text) else None


def _lenient_tinc10(text: str) -> Subnet | None:
    """How tincd 1.0's ``str2net()`` reads ``text``, or ``None`` if it rejects it."""
    rest = text[:1023]  # strncpy into char str[1024]
    weight = DEFAULT_WEIGHT
    if "#" in rest:
        rest, _, weight_text = rest.partition("#")
        scanned = _scan_int(weight_text, 0, 10)
        if scanned is None or scanned[1] != len(weight_text):
            return None
        weight = scanned[0]
        if not -(2**31) <= weight < 2**31:
            return None
    prefixlen = -1
    if "/" in rest:
        rest, _, prefix_text = rest.partition("/")
        scanned = _scan_int(prefix_text, 0, 10)
        if scanned is None or scanned[1] != len(prefix_text) or scanned[0] < 0:
            return None
        prefixlen = scanned[0]

    groups = _scan_groups(rest, 6, ":", 16)
    if groups is not None:
        if prefixlen >= 0:
            return None
        # tincd stores each %hx group into one byte of the MAC: truncation.
        return Subnet(Kind.MAC, int.from_bytes(bytes(g & 0xFF for g in groups), "big"), 48, weight)

    groups = _scan_groups(rest, 4, ".", 10)
    if groups is not None:
        prefixlen = 32 if prefixlen == -1 else prefixlen
        if prefixlen > 32 or any(g > 255 for g in groups):
            return None
        return _masked(Kind.IPV4, int.from_bytes(bytes(groups), "big"), prefixlen, weight)

    expanded = _expand_ipv6_like_tinc(rest)
    if expanded is None:
        return None
    groups = _scan_groups(expanded, 8, ":", 16)
    if groups is None:
        return None
    prefixlen = 128 if prefixlen == -1 else prefixlen
    if prefixlen > 128:
        return None
    address = 0
    for g in groups:
        address = (address << 16) | g
    return _masked(Kind.IPV6, address, prefixlen, weight)


def _masked(kind: Kind, address: int, prefixlen: int, weight: int) -> Subnet | None:
    if address & ((1 << (BITS[kind] - prefixlen)) - 1):
        return None  # tincd rejects host bits too; the strict parser says so
    return Subnet(kind, address, prefixlen, weight)


def _expand_ipv6_like_tinc(text: str) -> str | None:
    """The dotted-quad and ``::`` rewriting ``str2net()`` does before scanning."""
    colon = text.rfind(":")
    if colon >= 0:
        quad = _scan_groups(text[colon + 1 :], 4, ".", 10)
        if quad is not None:
            if any(g > 255 for g in quad):
                return None
            text = text[:colon] + f":{quad[0]:02x}{quad[1]:02x}:{quad[2]:02x}{quad[3]:02x}"
    if "::" in text:
        groups = len([g for g in text.split(":") if g])
        zeros = 8 - groups
        if zeros < 1:
            return None
        head, _, tail = text.partition("::")
        text = ":".join([p for p in (head, ":".join(["0"] * zeros), tail) if p])
    return text
