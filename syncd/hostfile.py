"""Read one tinc host file exactly as tincd 1.0.36 / 1.1 does (pure).

The line grammar mirrors ``read_config_file()`` and ``readline()`` in tinc's
``src/conf.c``; the project README lists what was confirmed by running
tincd.  Each rule below names the behaviour it copies:

* ``readline()`` uses ``fgets()`` into a 2049-byte buffer: a line longer than
  2048 bytes is cut, and the rest is parsed as a line of its own.  It strips
  the ``\\n`` and then one ``\\r``.
* Lines that are empty or start with ``#`` are skipped (no trailing comments).
* A line starting with ``-----BEGIN`` opens a PEM block that is skipped up to
  a line starting with ``-----END``.
* Trailing spaces and tabs are stripped.  The variable runs to the first
  space, tab or ``=``; then blanks, one optional ``=``, blanks; the rest is
  the value.  An indented line therefore has the empty variable name (and is
  ignored); ``Subnet: x`` is the unknown variable ``Subnet:``.
* A variable with no value makes tincd stop reading the file: everything
  after it is never seen, and the peer's connection is refused.

The parser never raises on any input; everything wrong is a ``Finding``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable
from typing import NamedTuple

from syncd import keys
from syncd.findings import Finding, Location, error, warning
from syncd.names import NAME_RE as NAME_RE  # re-exported: older importers
from syncd.subnet import IPV4_RE as _IPV4_RE
from syncd.subnet import Kind, Subnet, SubnetError, is_short_mac, parse_subnet

MAX_LINE_BYTES = 2048  # fgets(buffer, MAX_STRING_SIZE = 2049, fp)
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
            socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            return f"{host!r} is not a valid IPv6 address"
        return None
    if _DNS_NAME_RE.match(host):
        return None
    return f"{host!r} is not an IP address or a DNS name"


def _address(value: str, _tinc: str) -> str | None:
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
        Variable("Subnet", multi=True),  # checked by syncd.subnet
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

RSA_LABELS = ("RSA PUBLIC KEY", "PUBLIC KEY")  # PEM_read_RSAPublicKey, then PEM_read_RSA_PUBKEY
ED25519_LABEL = "ED25519 PUBLIC KEY"
_PRIVATE_LABEL_RE = re.compile(r"(?:[A-Z0-9 ]* )?PRIVATE KEY\Z")


# --- the parsed file ------------------------------------------------------------


class Entry(NamedTuple):
    """One ``Variable = value`` line that tincd stores."""

    line: int
    variable: str  # as written
    value: str


class PemBlock(NamedTuple):
    begin: int  # line numbers, 1-based
    end: int | None  # None: never terminated
    label: str  # "RSA PUBLIC KEY" for "-----BEGIN RSA PUBLIC KEY-----"
    body: tuple[str, ...]


class HostFile:
    """What tincd takes from one host file, plus every finding about it.

    A plain slotted class: one is built per node, so its construction cost
    shows on large networks."""

    __slots__ = ("findings", "firsts", "keys", "line_count", "path", "pem_blocks", "stopped_at", "subnets")

    def __init__(self, path: str) -> None:
        self.path = path
        self.pem_blocks: list[PemBlock] = []
        self.subnets: list[tuple[Subnet, int]] = []  # (subnet, line)
        self.keys: list[tuple[keys.PublicKey, int]] = []  # (key, line)
        self.stopped_at: int | None = None  # line where tincd stops reading
        self.line_count = 0
        self.findings: list[Finding] = []
        self.firsts: dict[str, Entry] = {}  # lower-case name -> first entry

    def first(self, variable: str) -> Entry | None:
        """The entry tincd uses for a single-valued variable (the first one)."""
        return self.firsts.get(variable.lower())


def _lines(path: str, data: bytes) -> tuple[Iterable[tuple[int, str]], list[Finding]]:
    """``readline()``: physical lines → the ``(line number, text)`` chunks
    tincd parses, plus the findings about the lines themselves.

    Almost every host file is short ASCII without CR or NUL: for those the
    chunks are just the lines.  Anything else takes the exact path below.
    """
    if data.isascii() and b"\r" not in data and b"\0" not in data:
        lines = data.decode("ascii").split("\n")
        if lines[-1] == "":
            lines.pop()
        if len(data) <= MAX_LINE_BYTES or max(map(len, lines), default=0) <= MAX_LINE_BYTES:
            return enumerate(lines, 1), []
    chunks: list[tuple[int, str]] = []
    problems: list[Finding] = []
    raw_lines = data.split(b"\n")
    ends_with_newline = raw_lines[-1] == b""
    if ends_with_newline:
        raw_lines.pop()
    bad_encoding_line = 0
    for index, raw in enumerate(raw_lines):
        number = index + 1
        has_newline = ends_with_newline or index < len(raw_lines) - 1
        if not bad_encoding_line:
            if b"\0" in raw:
                bad_encoding_line = number
            else:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    bad_encoding_line = number
        pieces = [raw[i : i + MAX_LINE_BYTES] for i in range(0, len(raw), MAX_LINE_BYTES)] or [b""]
        if has_newline and pieces[-1].endswith(b"\r"):
            pieces[-1] = pieces[-1][:-1]
        if len(pieces) > 1 and any(pieces[1:]):
            problems.append(
                error(
                    path,
                    number,
                    "syntax",
                    f"line is {len(raw)} bytes; tincd reads at most {MAX_LINE_BYTES} bytes a line and "
                    "parses the rest as a separate line",
                )
            )
        for piece in pieces:
            # C strings end at NUL: tincd never sees what follows one
            chunks.append((number, piece.split(b"\0", 1)[0].decode("utf-8", "replace")))
    if bad_encoding_line:
        kind = "a NUL byte" if b"\0" in raw_lines[bad_encoding_line - 1] else "bytes that are not UTF-8"
        problems.append(error(path, bad_encoding_line, "encoding", f"line holds {kind}; host files must be UTF-8 text"))
    return chunks, problems


# read_config_file(): the variable runs to the first space, tab or '=', then
# blanks, one optional '=', blanks.  Applied after trailing blanks are cut.
_SPLIT = re.compile(r"([^\t =]*)[\t ]*(?:=[\t ]*)?")


def parse_host_file(path: str, data: bytes, *, tinc: str = "1.0", min_rsa_bits: int = 2048) -> HostFile:
    """Parse ``data`` as tincd reads a host file; findings carry ``path``."""
    host = HostFile(path)
    chunks, host.findings = _lines(path, data)
    if data.startswith(b"\xef\xbb\xbf"):
        host.findings.append(
            error(
                path,
                1,
                "encoding",
                "the file starts with a UTF-8 byte order mark: tincd reads it as part of the first "
                "variable's name and ignores that line; save the file without a BOM",
            )
        )
    host.line_count = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)

    pem: PemBlock | None = None
    pem_body: list[str] = []
    for line, text in chunks:
        if not text or text[0] == "#":
            continue
        if text[0] == "-":
            if pem is not None:
                if text.startswith("-----END"):
                    host.pem_blocks.append(PemBlock(pem.begin, line, pem.label, tuple(pem_body)))
                    pem = None
                else:
                    pem_body.append(text)
                continue
            if text.startswith("-----BEGIN"):
                label = text[len("-----BEGIN") :].strip(" \t\r")
                pem = PemBlock(line, None, label.removesuffix("-----").strip(), ())
                pem_body = []
                continue
            if text.startswith("-----END"):
                host.findings.append(
                    warning(path, line, "syntax", "PEM end line without a BEGIN line; tincd ignores the line")
                )
                continue
        elif pem is not None:
            pem_body.append(text)
            continue

        if host.stopped_at is not None:
            continue  # tincd never reads past the stop; only PEM blocks (OpenSSL) still count
        stripped = text.rstrip(" \t")
        match = _SPLIT.match(stripped)
        assert match is not None  # every group in the pattern may be empty
        variable, value = match[1], stripped[match.end() :]

        if not value:
            what = f"no value for {variable!r}" if variable else "a line of only blanks"
            if variable.startswith("-----"):
                what = f"{variable!r} is not a complete PEM line"
            unread = f" (lines {line + 1}-{host.line_count} are never read)" if line < host.line_count else ""
            host.findings.append(
                error(
                    path,
                    line,
                    "syntax",
                    f"{what}: tincd stops reading the file here{unread} and refuses this node's connection",
                )
            )
            host.stopped_at = line
            continue
        if not variable:
            host.findings.append(
                error(path, line, "syntax", "indented line: tincd reads it as a nameless variable and ignores it")
            )
            continue
        _check_entry(host, Entry(line, variable, value), tinc)

    if pem is not None:
        host.findings.append(
            error(
                path,
                pem.begin,
                "syntax",
                f"the {pem.label or 'PEM'} block is never closed with an -----END line: "
                "tincd ignores everything after it",
            )
        )
        host.pem_blocks.append(PemBlock(pem.begin, None, pem.label, tuple(pem_body)))

    _load_keys(host, tinc, min_rsa_bits)
    return host


_NAME_ENDS = frozenset(" \t=")


def _check_entry(host: HostFile, entry: Entry, tinc: str) -> None:
    """One ``Variable = value`` line: where it belongs, and its value."""
    key = entry.variable.lower()
    spec = HOST_VARIABLES.get(key)
    if spec is None:
        host.findings.append(_misplaced_variable(host.path, entry, key))
        return
    path, line, value = host.path, entry.line, entry.value
    if tinc not in spec.tinc:
        host.findings.append(
            warning(
                path,
                line,
                "variable-unknown",
                f"{spec.name} is a tinc {'/'.join(spec.tinc)} variable; tincd {tinc} ignores it",
            )
        )
    n = len(key)
    if value[n : n + 1] in _NAME_ENDS and value[:n].lower() == key:
        host.findings.append(
            error(
                path,
                line,
                "value-invalid",
                f"the value repeats the variable name ({value[:60]!r}): "
                f"write '{spec.name} = {value[n:].lstrip(' =')[:60]}'",
            )
        )
        return
    first = host.firsts.setdefault(key, entry)
    if first is not entry and not spec.multi:
        host.findings.append(
            warning(
                path,
                line,
                "variable-duplicate",
                f"{spec.name} is set again; tincd uses the first value (line {first.line}) and ignores this one",
                (Location(path, first.line),),
            )
        )
        return
    if spec.name == "Subnet":
        _check_subnet(host, entry)
    elif spec.check is not None:
        problem = spec.check(value, tinc)
        if problem is not None:
            host.findings.append(error(path, line, "value-invalid", f"{spec.name}: {problem}"))


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


def _check_subnet(host: HostFile, entry: Entry) -> None:
    try:
        subnet = parse_subnet(entry.value)
    except SubnetError as exc:
        host.findings.append(error(host.path, entry.line, exc.code, f"Subnet {exc.message}"))
        return
    if subnet.kind is Kind.MAC and is_short_mac(entry.value):
        host.findings.append(
            warning(
                host.path,
                entry.line,
                "subnet-invalid",
                f"Subnet {entry.value!r} is read as the MAC address {subnet}: write it that way",
            )
        )
    host.subnets.append((subnet, entry.line))


def _load_keys(host: HostFile, tinc: str, min_rsa_bits: int) -> None:
    """Every key in the file, in tinc's order of precedence, checked."""
    path = host.path
    if not host.pem_blocks and "publickey" not in host.firsts:
        # the common tinc 1.1 file: one Ed25519PublicKey line and nothing else
        ed = host.firsts.get("ed25519publickey")
        if ed is not None and tinc == "1.1":
            try:
                host.keys.append((keys.ed25519_from_text(ed.value), ed.line))
                return
            except keys.KeyFormatError:
                pass  # the general path below reports it
    for block in host.pem_blocks:
        if _PRIVATE_LABEL_RE.match(block.label):
            host.findings.append(
                error(
                    path,
                    block.begin,
                    "key-invalid",
                    f"a {block.label} is published in this host file: remove it, and replace the key, "
                    "it is no longer secret",
                )
            )

    def add(key: keys.PublicKey, line: int) -> None:
        host.keys.append((key, line))
        if key.algorithm == "rsa" and key.bits < min_rsa_bits:
            host.findings.append(
                error(
                    path,
                    line,
                    "key-weak",
                    f"RSA key of {key.bits} bits is below the policy's min_rsa_bits ({min_rsa_bits})",
                )
            )

    # RSA: PublicKey, then a PEM block (PKCS#1 first, then SPKI).
    hex_key = host.first("PublicKey")
    if hex_key is not None:
        host.findings.append(
            warning(
                path,
                hex_key.line,
                "variable-unknown",
                "PublicKey (a bare hex modulus) is obsolete; use a PEM block (tinc -n NET export)",
            )
        )
        try:
            add(keys.rsa_from_hex(hex_key.value), hex_key.line)
        except keys.KeyFormatError as exc:
            host.findings.append(error(path, hex_key.line, "key-invalid", f"PublicKey: {exc}"))
    rsa_loaded = hex_key is not None
    for label in RSA_LABELS:
        for block in host.pem_blocks:
            if block.label != label:
                continue
            if block.end is None:
                continue  # already reported as syntax
            try:
                key = keys.rsa_from_pem_body(label, list(block.body))
            except keys.KeyFormatError as exc:
                host.findings.append(error(path, block.begin, "key-invalid", f"{label}: {exc}"))
                continue
            if rsa_loaded:
                host.findings.append(
                    warning(path, block.begin, "key-invalid", f"a second RSA key ({label}); tincd uses only the first")
                )
                continue
            add(key, block.begin)
            rsa_loaded = True

    # Ed25519: the variable, then a PEM block (tinc 1.1 only).
    ed_entry = host.first("Ed25519PublicKey")
    ed_loaded = False
    if ed_entry is not None:
        try:
            add(keys.ed25519_from_text(ed_entry.value), ed_entry.line)
            ed_loaded = True
        except keys.KeyFormatError as exc:
            host.findings.append(error(path, ed_entry.line, "key-invalid", f"Ed25519PublicKey: {exc}"))
    for block in host.pem_blocks:
        if block.label != ED25519_LABEL or block.end is None:
            continue
        try:
            key = keys.ed25519_from_text("".join(line.strip() for line in block.body))
        except keys.KeyFormatError as exc:
            host.findings.append(error(path, block.begin, "key-invalid", f"{ED25519_LABEL}: {exc}"))
            continue
        if not ed_loaded:
            add(key, block.begin)
            ed_loaded = True

    has_rsa = any(k.algorithm == "rsa" for k, _ in host.keys)
    has_ed = any(k.algorithm == "ed25519" for k, _ in host.keys)
    if tinc == "1.1" and has_rsa and not has_ed and not any(f.code == "key-invalid" for f in host.findings):
        # tinc 1.1 appends the Ed25519 key it learns from a peer to that peer's
        # host file; syncd would put the repository's version back each time.
        host.findings.append(
            warning(
                path,
                1,
                "key-missing",
                "no Ed25519PublicKey: tinc 1.1 will append the key it learns to this file, and syncd "
                "restores the repository's version: add the node's Ed25519PublicKey to the repository",
            )
        )
    if (tinc == "1.0" and has_rsa) or (tinc == "1.1" and (has_rsa or has_ed)):
        return
    if any(f.code == "key-invalid" for f in host.findings):
        return  # a key is there but broken: key-invalid already says so
    wanted = "an RSA public key (PEM block)" if tinc == "1.0" else "an Ed25519PublicKey or an RSA public key"
    hint = ""
    if host.stopped_at is not None:
        hint = f"; tincd stops reading at line {host.stopped_at}, before any key"
    elif tinc == "1.0" and has_ed:
        hint = "; its Ed25519 key is for tinc 1.1 only"
    host.findings.append(error(path, 1, "key-missing", f"no public key: tincd {tinc} needs {wanted}{hint}"))
