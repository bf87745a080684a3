"""The repository's ``syncd.yaml`` → ``Policy`` (pure).

The policy is signed together with the host files, so it is read from the
same tree.  It is parsed from PyYAML's node graph rather than from
``safe_load()`` values, for two reasons: every problem can name its key path
*and line*, and subnet strings are taken as written.  (YAML 1.1 reads
``10:20:30:40:50:55`` as a base-60 integer; ``safe_load`` would hand back
``2226686155``, not the MAC address.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from syncd.findings import Finding, error
from syncd.tinc.hostfile import TINC_VERSIONS
from syncd.tinc.names import is_node_name
from syncd.tinc.subnet import Kind, Subnet, SubnetError, parse_subnet

POLICY_FILE = "syncd.yaml"  # the repository's policy, at its root
DEFAULT_MAX_FILE_BYTES = 65536
DEFAULT_MAX_FILES = 100_000
DEFAULT_MAX_BLOB_BYTES = 1 << 20  # every blob of a new commit, anywhere in its tree
MAX_BLOB_BYTES = 1 << 30
DEFAULT_MIN_RSA_BITS = 2048
JOIN_MODES = ("admins", "members", "open")  # who may add a host file besides the admins


@dataclass(frozen=True, slots=True)
class Shared:
    """A subnet several nodes may announce on purpose (``nodes=None``: any)."""

    subnet: Subnet
    nodes: frozenset[str] | None
    line: int

    def allows(self, node: str) -> bool:
        return self.nodes is None or node in self.nodes


@dataclass(frozen=True, slots=True)
class Allocate:
    prefix: Subnet
    size: int


@dataclass(frozen=True, slots=True)
class Policy:
    hosts_dir: str = "hosts"
    tinc: str = "1.0"
    prefixes: tuple[Subnet, ...] = ()
    routes: Mapping[str, tuple[Subnet, ...]] = field(default_factory=dict)
    shared: tuple[Shared, ...] = ()
    min_rsa_bits: int = DEFAULT_MIN_RSA_BITS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_files: int = DEFAULT_MAX_FILES
    allocate: Allocate | None = None
    legacy_rsa: bool = False  # tinc 1.1 networks: add-node also makes an RSA key for 1.0 peers
    join: str = "admins"  # one of JOIN_MODES
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES  # at least max_file_bytes
    stale_after: float | None = None  # seconds: a host file with no signed change for longer is reported
    # where each node name was mentioned, for "names unknown nodes" findings
    node_mentions: tuple[tuple[str, str, int], ...] = ()  # (node, key path, line)

    def is_route(self, node: str, subnet: Subnet) -> bool:
        return subnet.network in {s.network for s in self.routes.get(node, ())}

    def shared_entry(self, node: str, subnet: Subnet) -> Shared | None:
        for entry in self.shared:
            if entry.subnet.network == subnet.network and entry.allows(node):
                return entry
        return None


DEFAULT_POLICY = Policy()


class _Problems:
    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: list[Finding] = []

    def add(self, node: yaml.Node | None, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.findings.append(error(self.path, line, "policy-invalid", f"{key}: {message}"))


def policy_of(data: bytes | None) -> tuple[Policy, list[Finding]]:
    """A tree's policy: its ``syncd.yaml``, or the defaults when it has none."""
    if data is None:
        return DEFAULT_POLICY, []
    return parse_policy(data, POLICY_FILE)


def parse_policy(data: bytes, path: str = POLICY_FILE) -> tuple[Policy, list[Finding]]:
    """Parse ``syncd.yaml``.  On any problem the findings say which key and
    line; the returned policy then holds the defaults for what was broken, so
    the host files are still checked (every finding at once)."""
    problems = _Problems(path)
    try:
        text = data.decode("utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        problems.add(None, "syncd.yaml", "not UTF-8 text")
        return DEFAULT_POLICY, problems.findings
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problems.findings.append(error(path, line, "policy-invalid", f"syncd.yaml is not valid YAML: {exc}"))
        return DEFAULT_POLICY, problems.findings
    if root is None:
        return DEFAULT_POLICY, []
    if not isinstance(root, yaml.MappingNode):
        problems.add(root, "syncd.yaml", "must be a mapping of keys")
        return DEFAULT_POLICY, problems.findings

    values: dict[str, object] = {}
    mentions: list[tuple[str, str, int]] = []
    readers = {
        "hosts_dir": _hosts_dir,
        "tinc": _tinc,
        "prefixes": _prefixes,
        "routes": lambda n, p: _routes(n, p, mentions),
        "shared": lambda n, p: _shared(n, p, mentions),
        "min_rsa_bits": lambda n, p: _int(n, p, "min_rsa_bits", 1024, 8192),
        "max_file_bytes": lambda n, p: _int(n, p, "max_file_bytes", 1, 16 * 1024 * 1024),
        "max_files": lambda n, p: _int(n, p, "max_files", 1, 10_000_000),
        "allocate": _allocate,
        "legacy_rsa": _bool,
        "join": _join,
        "max_blob_bytes": _blob_bytes,
        "stale_after": _stale_after,
    }
    seen: set[str] = set()
    for key_node, value_node in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key not in readers or key is None:
            problems.add(key_node, str(key), f"unknown key (known: {', '.join(readers)})")
            continue
        if key in seen:
            problems.add(key_node, key, "given twice")
            continue
        seen.add(key)
        before = len(problems.findings)
        value = readers[key](value_node, problems)
        if len(problems.findings) == before and value is not None:
            values[key] = value
    _blob_limit(values, root, problems)
    policy = Policy(**values, node_mentions=tuple(mentions))  # type: ignore[arg-type]
    return policy, problems.findings


def _blob_limit(values: dict[str, object], root: yaml.MappingNode, problems: _Problems) -> None:
    """``max_blob_bytes`` is at least ``max_file_bytes`` (a host file is a
    blob too); unset, it is the larger of its default and that."""
    files = values.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES)
    blobs = values.get("max_blob_bytes")
    assert isinstance(files, int) and (blobs is None or isinstance(blobs, int))
    if blobs is None:
        values["max_blob_bytes"] = max(DEFAULT_MAX_BLOB_BYTES, files)
    elif blobs < files:
        node = next(v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "max_blob_bytes")
        problems.add(node, "max_blob_bytes", f"{blobs} is below max_file_bytes ({files}): a host file is a blob too")
        values["max_blob_bytes"] = files


def _scalar(node: yaml.Node, problems: _Problems, key: str) -> str | None:
    if not isinstance(node, yaml.ScalarNode):
        problems.add(node, key, "must be a single value")
        return None
    return str(node.value)


def _hosts_dir(node: yaml.Node, problems: _Problems) -> str | None:
    text = _scalar(node, problems, "hosts_dir")
    if text is None:
        return None
    parts = text.strip("/").split("/")
    if text.startswith("/") or not text or any(p in ("", ".", "..") for p in parts) or "\\" in text:
        problems.add(node, "hosts_dir", f"{text!r} must be a relative directory inside the repository")
        return None
    return "/".join(parts)


def _tinc(node: yaml.Node, problems: _Problems) -> str | None:
    text = _scalar(node, problems, "tinc")
    if text is not None and text not in TINC_VERSIONS:
        problems.add(node, "tinc", f"{text!r} must be one of {', '.join(TINC_VERSIONS)} (quote it)")
        return None
    return text


def _bool(node: yaml.Node, problems: _Problems) -> bool | None:
    text = _scalar(node, problems, "legacy_rsa")
    if text is None:
        return None
    if text.lower() in ("true", "yes", "on"):
        return True
    if text.lower() in ("false", "no", "off"):
        return False
    problems.add(node, "legacy_rsa", f"{text!r} must be true or false")
    return None


def _join(node: yaml.Node, problems: _Problems) -> str | None:
    text = _scalar(node, problems, "join")
    if text is not None and text not in JOIN_MODES:
        problems.add(node, "join", f"{text!r} must be one of {', '.join(JOIN_MODES)}")
        return None
    return text


def _int(node: yaml.Node, problems: _Problems, key: str, low: int, high: int) -> int | None:
    text = _scalar(node, problems, key)
    if text is None:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        problems.add(node, key, f"{text!r} must be an integer from {low} to {high}")
        return None
    return int(text)


def _blob_bytes(node: yaml.Node, problems: _Problems) -> int | None:
    """A size (``1MiB``, ``65536``): the largest blob a new commit may hold."""
    from syncd.rules.units import parse_size

    text = _scalar(node, problems, "max_blob_bytes")
    if text is None:
        return None
    try:
        size = parse_size(int(text) if text.isdigit() else text)
    except ValueError as exc:
        problems.add(node, "max_blob_bytes", str(exc))
        return None
    if size > MAX_BLOB_BYTES:
        problems.add(node, "max_blob_bytes", f"{text!r} is over 1GiB")
        return None
    return size


def _stale_after(node: yaml.Node, problems: _Problems) -> float | None:
    """A duration (``365d``); ``null`` (the default) reports no node stale."""
    from syncd.rules.units import parse_duration

    text = _scalar(node, problems, "stale_after")
    if text is None or node.tag == "tag:yaml.org,2002:null" or text in ("", "null", "~"):
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        problems.add(node, "stale_after", str(exc))
        return None


def _subnet(node: yaml.Node, problems: _Problems, key: str) -> Subnet | None:
    text = _scalar(node, problems, key)
    if text is None:
        return None
    try:
        return parse_subnet(text)
    except SubnetError as exc:
        problems.add(node, key, exc.message)
        return None


def _subnet_list(node: yaml.Node, problems: _Problems, key: str) -> tuple[Subnet, ...] | None:
    if not isinstance(node, yaml.SequenceNode):
        problems.add(node, key, "must be a list of subnets")
        return None
    out = []
    for i, item in enumerate(node.value):
        subnet = _subnet(item, problems, f"{key}[{i}]")
        if subnet is not None:
            out.append(subnet)
    return tuple(out)


def _prefixes(node: yaml.Node, problems: _Problems) -> tuple[Subnet, ...] | None:
    prefixes = _subnet_list(node, problems, "prefixes")
    if prefixes is not None:
        for i, prefix in enumerate(prefixes):
            if prefix.kind is Kind.MAC:
                problems.add(node.value[i], f"prefixes[{i}]", "a prefix must be IPv4 or IPv6")
    return prefixes


def _node_name(node: yaml.Node, problems: _Problems, key: str, mentions: list[tuple[str, str, int]]) -> str | None:
    name = _scalar(node, problems, key)
    if name is None:
        return None
    if not is_node_name(name):
        problems.add(node, key, f"{name!r} is not a valid tinc node name")
        return None
    mentions.append((name, key, node.start_mark.line + 1))
    return name


def _routes(
    node: yaml.Node, problems: _Problems, mentions: list[tuple[str, str, int]]
) -> dict[str, tuple[Subnet, ...]] | None:
    if not isinstance(node, yaml.MappingNode):
        problems.add(node, "routes", "must map node names to lists of subnets")
        return None
    routes: dict[str, tuple[Subnet, ...]] = {}
    for key_node, value_node in node.value:
        name = _node_name(key_node, problems, "routes", mentions)
        if name is None:
            continue
        subnets = _subnet_list(value_node, problems, f"routes.{name}")
        if subnets is not None:
            routes[name] = routes.get(name, ()) + subnets
    return routes


def _shared(node: yaml.Node, problems: _Problems, mentions: list[tuple[str, str, int]]) -> tuple[Shared, ...] | None:
    if not isinstance(node, yaml.SequenceNode):
        problems.add(node, "shared", "must be a list of {subnet, nodes} entries")
        return None
    out: list[Shared] = []
    for i, item in enumerate(node.value):
        key = f"shared[{i}]"
        if not isinstance(item, yaml.MappingNode):
            problems.add(item, key, "must be a mapping with 'subnet' and 'nodes'")
            continue
        fields = {k.value: v for k, v in item.value if isinstance(k, yaml.ScalarNode)}
        unknown = sorted(set(fields) - {"subnet", "nodes"})
        if unknown or "subnet" not in fields or "nodes" not in fields:
            problems.add(item, key, "must have exactly the keys 'subnet' and 'nodes'")
            continue
        subnet = _subnet(fields["subnet"], problems, f"{key}.subnet")
        nodes_node = fields["nodes"]
        nodes: frozenset[str] | None
        if isinstance(nodes_node, yaml.ScalarNode) and nodes_node.value == "*":
            nodes = None
        elif isinstance(nodes_node, yaml.SequenceNode) and nodes_node.value:
            names = [_node_name(n, problems, f"{key}.nodes", mentions) for n in nodes_node.value]
            nodes = frozenset(n for n in names if n is not None)
        else:
            problems.add(nodes_node, f"{key}.nodes", 'must be a non-empty list of node names or "*"')
            continue
        if subnet is not None:
            out.append(Shared(subnet, nodes, item.start_mark.line + 1))
    return tuple(out)


def _allocate(node: yaml.Node, problems: _Problems) -> Allocate | None:
    if not isinstance(node, yaml.MappingNode):
        problems.add(node, "allocate", "must be a mapping {prefix, size}")
        return None
    fields = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    if set(fields) != {"prefix", "size"}:
        problems.add(node, "allocate", "must have exactly the keys 'prefix' and 'size'")
        return None
    prefix = _subnet(fields["prefix"], problems, "allocate.prefix")
    if prefix is None:
        return None
    if prefix.kind is Kind.MAC:
        problems.add(fields["prefix"], "allocate.prefix", "must be an IPv4 or IPv6 prefix")
        return None
    size = _int(fields["size"], problems, "allocate.size", prefix.prefixlen, prefix.bits)
    if size is None:
        return None
    return Allocate(prefix, size)
