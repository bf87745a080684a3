"""Read one tinc host file exactly as tincd 1.0.36 / 1.1 does (pure).

Lines are read as tincd's ``read_config_file()`` reads them (``conf``);
this module says what each variable means in a host file (``src/conf.c``,
``src/net_setup.c``, ``src/subnet_parse.c``), and ``hostkeys`` which keys
tincd loads from it.  The project README lists what was confirmed by running
tincd.

The parser never raises on any input; everything wrong is a ``Finding``.
"""

from __future__ import annotations

import re
from _socket import AF_INET6, inet_pton  # what socket re-exports, without socket.py's enums to build
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

from syncd.findings import Finding, Location, error, warning
from syncd.tinc import keys
from syncd.tinc.conf import Entry, PemBlock, line_count_of, plain_entries, read_lines
from syncd.tinc.hostkeys import load_keys
from syncd.tinc.subnet import IPV4_RE as _IPV4_RE
from syncd.tinc.subnet import Kind, Subnet, SubnetError, is_short_mac, parse_subnet

TINC_VERSIONS = ("1.0", "1.1")

# --- the variables a host file may hold -----------------------------------

Validator = Callable[[str, str], str | None]  # (value, tinc version) -> problem or None


def _bool(value: str, _tinc: str) -> str | None:
    # get_config_bool(): strcasecmp with "yes" / "no"
    return None if value.lower() in ("yes", "no") else f'"yes" or "no" expected, not {value!r}'


_INT_RE = re.compile(r"-?[0-9]+\Z")


def _int(low: int, high: int) -> Validator:
    def check(value: str, _tinc: str) -> str | None:
        if not _INT_RE.match(value):
            return f"an integer is expected, not {value!r}"
        if not low <= int(value) <= high:
            return f"{value} is out of range ({low}..{high})"
        return None

    return check


def _compression(value: str, tinc: str) -> str | None:
    high = 12 if tinc == "1.1" else 11  # 1.1 adds LZ4 as level 12
    return _int(0, high)(value, tinc)


_SERVICE_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,31}\Z")


def _port_problem(port: str) -> str | None:
    if port.isdigit():
        return None if 1 <= int(port) <= 65535 else f"port {port} is out of range (1..65535)"
    if _SERVICE_RE.match(port):
        return None  # tincd resolves service names through getaddrinfo()
    return f"{port!r} is not a port number (1..65535) or a service name"


def _port(value: str, _tinc: str) -> str | None:
    return _port_problem(value)


# A DNS name: dot-separated labels of letters, digits, '_' and inner '-',
# 1-63 characters each, 253 in all, with an optional final dot.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME_RE = re.compile(rf"(?=[^ ]{{1,253}}\.?\Z){_LABEL}(?:\.{_LABEL})*\.?\Z")
_DOTTED_RE = re.compile(r"[0-9.]+\Z")


def host_problem(host: str) -> str | None:
    """Why ``host`` is not an IPv4 address, bare IPv6 address or DNS name."""
    if _DOTTED_RE.match(host):
        return None if _IPV4_RE.match(host) else f"{host!r} is not a valid IPv4 address"
    if ":" in host:
        if host.startswith("[") or "%" in host:
            return f"{host!r}: write IPv6 addresses without brackets or zone (tincd passes HOST to getaddrinfo)"
        try:
            inet_pton(AF_INET6, host)
        except OSError:
            return f"{host!r} is not a valid IPv6 address"
        return None
    if _DNS_NAME_RE.match(host):
        return None
    return f"{host!r} is not an IP address or a DNS name"


# The usual Address, in one match: a DNS name with a letter, '_' or '-' in
# it (so neither of the IP forms host_problem tries first), then nothing, or
# one space and a port number without a leading zero (at most 65535: checked
# after).  Whatever this refuses, _address reads in full.  A value of at most
# 253 characters has a name short enough (_DNS_NAME_RE's lookahead).
_USUAL_ADDRESS_RE = re.compile(rf"(?=[^ ]*?[A-Za-z_-]){_LABEL}(?:\.{_LABEL})*\.?(?: ([1-9][0-9]{{0,4}}))?\Z")


def _address(value: str, _tinc: str) -> str | None:
    usual = _USUAL_ADDRESS_RE.match(value) if len(value) <= 253 else None
    if usual is not None and (usual[1] is None or int(usual[1]) <= 65535):
        return None
    return address_problem(value)


def address_problem(value: str) -> str | None:
    """Why an ``Address`` value is not one tincd can use, read in full."""
    # tincd splits at the first space only: "HOST PORT"; a third word ends up
    # in the port and getaddrinfo() fails on it.
    # getaddrinfo() reads the service with strtoul(), which skips leading
    # blanks: "HOST  655" works.
    host, sep, port = value.partition(" ")
    problem = host_problem(host)
    if problem is None and sep:
        problem = _port_problem(port.lstrip(" \t"))
    return problem


_CIPHER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def _cipher(value: str, _tinc: str) -> str | None:
    return None if _CIPHER_RE.match(value) else f"{value!r} is not an OpenSSL algorithm name or 'none'"


class Variable(NamedTuple):
    name: str  # canonical spelling
    multi: bool = False
    check: Validator | None = None
    tinc: tuple[str, ...] = TINC_VERSIONS


HOST_VARIABLES: dict[str, Variable] = {
    v.name.lower(): v
    for v in (
        Variable("Address", multi=True, check=_address),
        Variable("Port", check=_port),
        Variable("Subnet", multi=True),  # checked by syncd.tinc.subnet
        Variable("IndirectData", check=_bool),
        Variable("TCPOnly", check=_bool),
        Variable("ClampMSS", check=_bool),
        Variable("PMTUDiscovery", check=_bool),
        Variable("Weight", check=_int(-(2**31), 2**31 - 1), tinc=("1.1",)),
        Variable("PMTU", check=_int(1, 65535)),
        Variable("MACLength", check=_int(0, 64)),
        Variable("Cipher", check=_cipher),
        Variable("Digest", check=_cipher),
        Variable("Compression", check=_compression),
        Variable("PublicKey"),  # checked as a key
        Variable("Ed25519PublicKey", tinc=("1.1",)),  # checked as a key
    )
}

LOCAL_PATH_VARIABLES = {v.lower(): v for v in ("PublicKeyFile", "Ed25519PublicKeyFile")}

# tinc.conf variables (tincd(8), tinc.conf(5) of 1.0.36 and 1.1): meaningful
# only in the node's own tinc.conf, never in a host file others receive.
SERVER_VARIABLES = {
    v.lower(): v
    for v in (
        "AddressFamily",
        "AutoConnect",
        "BindToAddress",
        "BindToInterface",
        "Broadcast",
        "BroadcastSubnet",
        "ConnectTo",
        "DecrementTTL",
        "Device",
        "DeviceStandby",
        "DeviceType",
        "DirectOnly",
        "Ed25519PrivateKeyFile",
        "ExperimentalProtocol",
        "Forwarding",
        "FWMark",
        "GraphDumpFile",
        "Hostnames",
        "IffOneQueue",
        "Interface",
        "InvitationExpire",
        "KeyExpire",
        "ListenAddress",
        "LocalDiscovery",
        "LocalDiscoveryAddress",
        "LogLevel",
        "MACExpire",
        "MaxConnectionBurst",
        "MaxOutputBufferSize",
        "MaxTimeout",
        "Mode",
        "Name",
        "PingInterval",
        "PingTimeout",
        "PriorityInheritance",
        "PrivateKey",
        "PrivateKeyFile",
        "ProcessPriority",
        "Proxy",
        "ReplayWindow",
        "ScriptsExtension",
        "ScriptsInterpreter",
        "StrictSubnets",
        "TunnelServer",
        "UDPDiscovery",
        "UDPDiscoveryKeepaliveInterval",
        "UDPDiscoveryInterval",
        "UDPDiscoveryTimeout",
        "UDPInfoInterval",
        "UDPRcvBuf",
        "UDPSndBuf",
        "UPnP",
        "UPnPDiscoverWait",
        "UPnPRefreshPeriod",
        "VDEGroup",
        "VDEPort",
    )
}
_SECRET_VARIABLES = {"privatekey", "privatekeyfile", "ed25519privatekeyfile"}

# --- the parsed file ------------------------------------------------------------


class HostFile:
    """What tincd takes from one host file, plus every finding about it.

    A plain slotted class: one is built per node, so its construction cost
    shows on large networks."""

    __slots__ = ("findings", "firsts", "keys", "line_count", "owners", "path", "pem_blocks", "stopped_at", "subnets")

    def __init__(self, path: str) -> None:
        self.path = path
        self.pem_blocks: list[PemBlock] = []
        self.subnets: list[tuple[Subnet, int]] = []  # (subnet, line)
        self.keys: list[tuple[keys.PublicKey, int]] = []  # (key, line)
        self.stopped_at: int | None = None  # line where tincd stops reading
        self.line_count = 0
        self.findings: list[Finding] = []
        self.firsts: dict[str, Entry] = {}  # lower-case name -> first entry
        self.owners: tuple[tuple[bytes, str], ...] = ()  # (key blob, comment) of its owner lines (owners.py)

    def first(self, variable: str) -> Entry | None:
        """The entry tincd uses for a single-valued variable (the first one)."""
        return self.firsts.get(variable.lower())


def parse_host_file(path: str, data: bytes, *, tinc: str = "1.0", min_rsa_bits: int = 2048) -> HostFile:
    """Parse ``data`` as tincd reads a host file; findings carry ``path``."""
    host = HostFile(path)
    plain = plain_entries(data)
    if plain is None:
        conf = read_lines(path, data, host.findings, partial(_check_entry, host, tinc))
        host.pem_blocks, host.stopped_at, host.line_count = conf
    else:  # read_config's shortcut, without a call through partial() a line
        for entry in plain:
            _check_entry(host, tinc, entry)
        host.line_count = line_count_of(data)
    host.keys, found = load_keys(
        path, host.firsts, host.pem_blocks, host.stopped_at, tinc=tinc, min_rsa_bits=min_rsa_bits
    )
    host.findings.extend(found)
    return host


_NAME_ENDS = frozenset(" \t=")


def _check_entry(host: HostFile, tinc: str, entry: Entry) -> None:
    """One ``Variable = value`` line: where it belongs, and its value.  Runs
    for every line of every host file: the usual line (a known variable of
    this tinc, not repeated) takes three lookups before its value's check."""
    line, variable, value = entry
    key = variable.lower()
    spec = HOST_VARIABLES.get(key)
    if spec is None:
        host.findings.append(_misplaced_variable(host.path, entry, key))
        return
    name, multi, check, versions = spec
    if tinc not in versions:
        host.findings.append(
            warning(
                host.path,
                line,
                "variable-unknown",
                f"{name} is a tinc {'/'.join(versions)} variable; tincd {tinc} ignores it",
            )
        )
    n = len(key)
    if value[n : n + 1] in _NAME_ENDS and value[:n].lower() == key:
        host.findings.append(
            error(
                host.path,
                line,
                "value-invalid",
                f"the value repeats the variable name ({value[:60]!r}): write '{name} = {value[n:].lstrip(' =')[:60]}'",
            )
        )
        return
    first = host.firsts.setdefault(key, entry)
    if first is not entry and not multi:
        host.findings.append(
            warning(
                host.path,
                line,
                "variable-duplicate",
                f"{name} is set again; tincd uses the first value (line {first.line}) and ignores this one",
                (Location(host.path, first.line),),
            )
        )
        return
    if name == "Subnet":
        _check_subnet(host, line, value)
    elif check is not None:
        problem = check(value, tinc)
        if problem is not None:
            host.findings.append(error(host.path, line, "value-invalid", f"{name}: {problem}"))


def _misplaced_variable(path: str, entry: Entry, key: str) -> Finding:
    """The finding for a variable that has no place in a host file."""
    line, variable = entry.line, entry.variable
    if key in LOCAL_PATH_VARIABLES:
        return error(
            path,
            line,
            "variable-local-path",
            f"{variable} points into one node's disk; in a shared host file it means "
            "nothing to the others: put the key itself in the file",
        )
    if key in _SECRET_VARIABLES:
        return error(
            path,
            line,
            "variable-server-only",
            f"{variable} belongs in the node's own tinc.conf, never in a host file that "
            "every node receives: if this is a real private key, it is now public: replace it",
        )
    if key in SERVER_VARIABLES:
        return error(
            path,
            line,
            "variable-server-only",
            f"{SERVER_VARIABLES[key]} is a tinc.conf variable; in a host file it does not do what it seems",
        )
    if key.endswith(":") and (key[:-1] in HOST_VARIABLES or key[:-1] in SERVER_VARIABLES):
        return error(
            path,
            line,
            "syntax",
            f"{variable!r} is not a variable name, so tincd ignores the line: write '{variable[:-1]} = {entry.value}'",
        )
    return warning(path, line, "variable-unknown", f"unknown variable {variable!r}; tincd ignores it")


def _check_subnet(host: HostFile, line: int, value: str) -> None:
    try:
        subnet = parse_subnet(value)
    except SubnetError as exc:
        host.findings.append(error(host.path, line, exc.code, f"Subnet {exc.message}"))
        return
    if subnet[0] is Kind.MAC and is_short_mac(value):
        host.findings.append(
            warning(
                host.path,
                line,
                "subnet-invalid",
                f"Subnet {value!r} is read as the MAC address {subnet}: write it that way",
            )
        )
    host.subnets.append((subnet, line))
