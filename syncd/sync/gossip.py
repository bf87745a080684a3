"""Notifications between agents: what one says, where a node's agent
listens, and whom an agent tells (docs/architecture.md, "Notifications").

A notification is one UDP datagram, a small JSON object::

    {"syncd": 1, "net": "inet6", "commit": "<hex id>", "via": "node", "from": "my_pc", "origin": "gateway"}

It carries no trust: it only makes the receiving agent run a pass sooner,
and that pass fetches, verifies and checks as always.  ``via`` says who
claims to have sent it (``node``: another agent, named by ``from``;
``hook``: ``syncd notify``; ``webhook``: a forge's push webhook).

Where a node's agent listens comes from the host file the node installed
(signed, checked): an explicit ``# syncd-notify: ADDRESS`` line its owner
may add, else the first address of its first ``Subnet`` (the network
address + 1 for a prefix, as a ``tinc-up`` usually assigns it; the address
itself for a /32 or /128).

Fan-out: the nodes with an agent address in the order of
``sha256(commit:name)`` (the same on every node that applied the commit),
with the *origin* put first (the node that learned of the commit other than
from another agent: its poll, the server's hook, a webhook), are a k-ary
tree: node *i*'s children are *k·i+1 … k·i+k*; the same order reversed
(origin still first) is a second tree.  With ``notify.fanout`` f (default
5), k is ⌈f/2⌉ in the first tree and ⌊f/2⌋ in the second.  An agent that
applied a new tip tells its children in both and names the origin, so the
next ones use the same trees.  A push costs at most f messages per node
(O(N)); the first tree alone reaches every node in ⌈log_k N⌉ hops
(O(log N): 3 for 50 nodes, with both); a node that is down leaves to polling
only the nodes whose parents in *both* trees are down (or unreached).  When
several nodes are told from outside, each is the origin of its own trees:
more messages to nodes that already applied the tip (which pass nothing on),
still at most f each.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from syncd.tinc.names import is_node_name
from syncd.tinc.subnet import Kind, SubnetError, parse_subnet

PORT = 6550  # UDP: the default notify.port
MAX_DATAGRAM = 512  # bytes: anything longer is not a notification
VIA = ("node", "hook", "webhook")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?\Z")  # SHA-1 or SHA-256 object id
_EXPLICIT = b"# syncd-notify:"
_SUBNET_RE = re.compile(rb"[ \t]*subnet[ \t]*(?:=[ \t]*|[ \t]+)([^ \t#]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification, as sent or as received (every field untrusted)."""

    net: str
    commit: str
    via: str = "node"
    sender: str = ""  # the sending node's name (via node), else empty
    origin: str = ""  # via node: the origin of the trees it was sent in

    def encode(self) -> bytes:
        body: dict[str, object] = {"syncd": 1, "net": self.net, "commit": self.commit, "via": self.via}
        if self.sender:
            body["from"] = self.sender
            body["origin"] = self.origin or self.sender
        return json.dumps(body, separators=(",", ":")).encode()

    @property
    def by(self) -> str:
        """Who it says it is from, for logs and status: a node's name, or hook / webhook."""
        return self.sender if self.via == "node" else self.via


def decode(data: bytes) -> Notice | None:
    """A datagram → a ``Notice``, or None for anything that is not exactly one."""
    if len(data) > MAX_DATAGRAM:
        return None
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(body, dict) or body.get("syncd") != 1:
        return None
    net, commit, via = body.get("net"), body.get("commit"), body.get("via")
    sender, origin = body.get("from", ""), body.get("origin", "")
    if not all(isinstance(value, str) for value in (net, commit, sender, origin)):
        return None
    if via not in VIA or not is_commit(str(commit)):
        return None
    if via == "node" and not (is_node_name(str(sender)) and is_node_name(str(origin))):
        return None
    if via != "node":
        sender = origin = ""
    return Notice(str(net), str(commit), str(via), str(sender), str(origin))


def is_commit(text: str) -> bool:
    return _COMMIT_RE.match(text) is not None


# --- where a node's agent listens ----------------------------------------------------------


def agent_address(data: bytes) -> str | None:
    """The address of a node's agent from its host file: the explicit
    ``# syncd-notify: ADDRESS`` line, else the first address of its first
    IP Subnet that is not a default route; None when it has neither."""
    address: str | None = None
    for raw in data.split(b"\n"):
        line = raw.strip()
        if line.startswith(b"-----BEGIN"):
            break  # a key block: tincd reads no variable past it
        if line.startswith(_EXPLICIT):
            return _address(line[len(_EXPLICIT) :].strip().decode("ascii", "replace"))
        match = _SUBNET_RE.match(raw) if address is None else None
        if match is not None:
            address = _first_address(match[1].decode("ascii", "replace"))
    return address


def _first_address(text: str) -> str | None:
    """A subnet's first host address: itself for a /32 or /128, else the
    network address + 1 (what ``tinc-up`` usually assigns); None for a MAC
    subnet, a default route or what does not parse."""
    try:
        parsed = parse_subnet(text)
    except (SubnetError, ValueError):
        return None
    if parsed.kind == Kind.MAC or parsed.prefixlen == 0:
        return None
    first = parsed.first if parsed.prefixlen == parsed.bits else parsed.first + 1
    address = ipaddress.IPv6Address(first) if parsed.kind == Kind.IPV6 else ipaddress.IPv4Address(first)
    return str(address) if _one_host(address) else None


def _address(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(address) if _one_host(address) else None


def _one_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address of one host: not the wildcard (``0.0.0.0``, ``::``: an
    agent bound there listens on every interface, and one sent to reaches
    the sender itself), nor multicast or broadcast (a notification sent
    there leaves the VPN for every host of the sender's link)."""
    broadcast = address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255")
    return not (address.is_unspecified or address.is_multicast or broadcast)


def directory(hosts_dir: Path) -> dict[str, str]:
    """Every installed node with an agent address: name → address."""
    found: dict[str, str] = {}
    try:
        entries = sorted(hosts_dir.iterdir())
    except OSError:
        return found
    for path in entries:
        if not is_node_name(path.name) or not path.is_file():
            continue
        try:
            address = agent_address(path.read_bytes()[:65536])
        except OSError:
            continue
        if address is not None:
            found[path.name] = address
    return found


# --- whom to tell --------------------------------------------------------------------------


def order(names: Iterable[str], commit: str, origin: str) -> list[str]:
    """The nodes in the commit's order, ``origin`` first (the same on every
    node that applied the commit)."""

    def key(name: str) -> tuple[bytes, str]:
        return hashlib.sha256(f"{commit}:{name}".encode()).digest(), name

    return [origin, *sorted((name for name in names if name != origin), key=key)]


def recipients(names: Iterable[str], me: str, commit: str, fanout: int, origin: str) -> list[str]:
    """Whom ``me`` tells of ``commit``, which it has just applied: its
    children in the two trees rooted at ``origin`` (``me`` when it learned
    of the commit from outside), ⌈fanout/2⌉ in the first, ⌊fanout/2⌋ in the
    second, which is the first's order reversed (origin still first), so
    that a node's two parents differ."""
    known = set(names)
    if fanout <= 0 or me not in known:
        return []
    if origin not in known:
        origin = me
    first = order(known, commit, origin)
    told: list[str] = []
    for k, ordered in (((fanout + 1) // 2, first), (fanout // 2, [origin, *reversed(first[1:])])):
        i = ordered.index(me)
        told += [name for name in ordered[k * i + 1 : k * i + k + 1] if name not in told]
    return told


def targets(addresses: Mapping[str, str], names: Iterable[str], port: int) -> list[tuple[str, int]]:
    return [(addresses[name], port) for name in names if name in addresses]
