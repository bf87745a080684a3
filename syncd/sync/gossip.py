"""Notifications between agents: what one says, where a node's agent
listens, and whom an agent tells (docs/architecture.md, "Notifications").

A notification is one UDP datagram, a small JSON object::

    {"syncd": 1, "net": "inet6", "commit": "<hex id>", "via": "node", "from": "my_pc"}

It carries no trust: it only makes the receiving agent run a pass sooner,
and that pass fetches, verifies and checks as always.  ``via`` says who
claims to have sent it (``node``: another agent, named by ``from``;
``hook``: ``syncd notify``; ``webhook``: a forge's push webhook).

Where a node's agent listens comes from the host file the node installed
(signed, checked): an explicit ``# syncd-notify: ADDRESS`` line its owner
may add, else the first address of its first ``Subnet`` (the network
address + 1 for a prefix, as a ``tinc-up`` usually assigns it; the address
itself for a /32 or /128).

Fan-out: the nodes with an agent address are ordered by
``sha256(commit + ":" + name)``, the same order on every node that applied
the commit; the first is the root of a k-ary tree (k = ``notify.fanout``, default 4) over that order
(node *i*'s children are *k·i+1 … k·i+k*).  An agent that applied a new tip
tells its children, and also the root when it learned of the tip other
than from another agent (its poll, the server's hook, a webhook).  So a push
costs at most *k+1* messages per node (O(N)), and reaches every node in at
most 1 + ⌈log_k N⌉ hops; a node that is down leaves its subtree to polling
for that commit (the order changes with every commit).
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

    def encode(self) -> bytes:
        body: dict[str, object] = {"syncd": 1, "net": self.net, "commit": self.commit, "via": self.via}
        if self.sender:
            body["from"] = self.sender
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
    net, commit, via, sender = body.get("net"), body.get("commit"), body.get("via"), body.get("from", "")
    if not (isinstance(net, str) and isinstance(commit, str) and isinstance(sender, str)):
        return None
    if via not in VIA or not is_commit(commit) or (via == "node") != is_node_name(sender):
        return None
    return Notice(net, commit, str(via), sender if via == "node" else "")


def is_commit(text: str) -> bool:
    return _COMMIT_RE.match(text) is not None


# --- where a node's agent listens ----------------------------------------------------------


def agent_address(data: bytes) -> str | None:
    """The address of a node's agent from its host file: the explicit
    ``# syncd-notify: ADDRESS`` line, else the first Subnet's first address;
    None when it has neither (or a MAC subnet first)."""
    subnet: bytes | None = None
    for raw in data.split(b"\n"):
        line = raw.strip()
        if line.startswith(b"-----BEGIN"):
            break  # a key block: tincd reads no variable past it
        if line.startswith(_EXPLICIT):
            return _address(line[len(_EXPLICIT) :].strip().decode("ascii", "replace"))
        if subnet is None:
            match = _SUBNET_RE.match(raw)
            subnet = match[1] if match else None
    if subnet is None:
        return None
    try:
        parsed = parse_subnet(subnet.decode("ascii", "replace"))
    except (SubnetError, ValueError):
        return None
    if parsed.kind == Kind.MAC:
        return None
    first = parsed.first if parsed.prefixlen == parsed.bits else parsed.first + 1
    return str(ipaddress.ip_address(first) if parsed.kind == Kind.IPV6 else ipaddress.IPv4Address(first))


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


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


def order(names: Iterable[str], commit: str) -> list[str]:
    """The nodes in the commit's order (the same on every node)."""
    return sorted(names, key=lambda name: (hashlib.sha256(f"{commit}:{name}".encode()).digest(), name))


def recipients(names: Iterable[str], me: str, commit: str, fanout: int, *, tell_root: bool) -> list[str]:
    """Whom ``me`` tells of ``commit``, which it has just applied: its
    children in the commit's tree, and the root when ``tell_root``."""
    ordered = order(names, commit)
    if fanout <= 0 or me not in ordered:
        return []
    i = ordered.index(me)
    told = ordered[fanout * i + 1 : fanout * i + fanout + 1]
    if tell_root and i != 0:
        told.insert(0, ordered[0])
    return told


def targets(addresses: Mapping[str, str], names: Iterable[str], port: int) -> list[tuple[str, int]]:
    return [(addresses[name], port) for name in names if name in addresses]
