"""``syncd show`` as text and as a graphviz graph, drawn from the one
document of ``show.network_doc`` (the JSON output).

The graph follows tinc: a node connects out to the nodes whose host file
carries an ``Address`` (a node's ``ConnectTo`` may name any of them), so
each node has an edge to every node with an ``Address``.  When that would
be more edges than a reader can follow, the nodes with an ``Address`` are
drawn as one cluster and each other node gets one edge to the cluster:
graphviz's ``lhead`` says "to every node in it".
"""

from __future__ import annotations

import json
from collections.abc import Sequence

Doc = dict[str, object]
MAX_EDGES = 400  # above this many ConnectTo edges the nodes with an Address become one cluster
# What a host file may hold that a terminal would obey (an escape sequence that sets the title,
# the clipboard, or clears the screen) or that reorders what is shown (bidi controls): in the
# text and graph outputs, shown as \xNN / \uNNNN.  The line breaks of the output itself stay.
_UNSEEN = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x0A} | {
    c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)
}


def visible(text: str) -> str:
    """``text`` with every control character written out (``_UNSEEN``)."""
    return text.translate(_UNSEEN)


def as_dict(value: object) -> Doc:
    assert isinstance(value, dict)
    return value


def as_list(value: object) -> list[Doc]:
    assert isinstance(value, list)
    return value


def render_json(doc: Doc) -> str:
    return json.dumps(doc, indent=2) + "\n"


def thousands(n: int) -> str:
    return f"{n:,}"


def usage_line(entry: Doc) -> str:
    """``2002:102:304::/48: 3 of 65,536 /64s used, next free 2002:102:304:3::/64``."""
    used, total, size = entry["used"], entry["total"], entry["size"]
    assert isinstance(used, int) and isinstance(total, int)
    free = f"next free {entry['next_free']}" if entry["next_free"] else "none free"
    return f"{entry['prefix']}: {thousands(used)} of {thousands(total)} /{size}s used, {free}"


def subnet_text(subnet: Doc) -> str:
    marks = [m for m in ("route", "shared") if subnet[m]]
    return f"{subnet['subnet']}{' (' + ', '.join(marks) + ')' if marks else ''}"


def change_text(node: Doc, known: bool) -> str:
    """``2026-01-05 by alice@home-pc (owner:my_pc)``."""
    change = node["last_change"]
    if not isinstance(change, dict):
        return "none signed" if known else "unknown"
    when = str(change["when"])[:10]
    who = change["signer"] or change["key"]
    role = f" ({change['role']})" if change["role"] else ""
    return f"{when} by {who}{role}"


def history_text(doc: Doc) -> str:
    history = as_dict(doc["history"])
    if not history["known"]:
        return "history unknown (not a git repository): no last changes, no stale nodes"
    note = f"; {history['note']}" if history["note"] else ""
    return f"history at {str(history['tip'])[:12]}{note}"


def policy_lines(doc: Doc) -> list[str]:
    policy = as_dict(doc["policy"])
    prefixes = ", ".join(str(p) for p in as_list(policy["prefixes"])) or "any"
    lines = [
        f"policy:   tinc {policy['tinc']}, prefixes {prefixes}, join {policy['join']}, "
        f"stale_after {policy['stale_after'] or 'not set'}"
    ]
    routes = as_dict(policy["routes"])
    for node, subnets in routes.items():
        assert isinstance(subnets, list)
        lines.append(f"route:    {node}: {', '.join(subnets)}")
    for shared in as_list(policy["shared"]):
        nodes = shared["nodes"]
        lines.append(f"shared:   {shared['subnet']}: {', '.join(nodes) if isinstance(nodes, list) else 'any node'}")
    for entry in as_list(doc["allocation"]):
        lines.append(f"allocate: {usage_line(entry)}")
    return lines


def not_nodes_lines(doc: Doc, shown: int = 10) -> list[str]:
    """The files of the hosts directory that tincd never reads as nodes."""
    entries = as_list(doc["not_nodes"])
    if not entries:
        return []
    texts = [f"{e['path']} ({', '.join(_strings(e['codes']))})" for e in entries[:shown]]
    more = f", and {len(entries) - shown} more" if len(entries) > shown else ""
    return [f"ignored:  {len(entries)} files are no node tincd reads: {', '.join(texts)}{more}"]


def render_text(doc: Doc) -> str:
    nodes = as_list(doc["nodes"])
    findings = as_dict(doc["findings"])
    stale = sum(1 for n in nodes if n["stale"])
    lines = [
        f"network {doc['source']}: {len(nodes)} nodes, {stale} stale, "
        f"{findings['errors']} errors and {findings['warnings']} warnings (syncd check)",
        f"history:  {history_text(doc)}",
        *policy_lines(doc),
        *not_nodes_lines(doc),
        "",
    ]
    header = ("NODE", "SUBNETS", "ADDRESS", "KEYS", "OWNERS", "LAST SIGNED CHANGE")
    rows = [header]
    for node in nodes:
        owners = ", ".join(f"{o['comment'] or '?'} ({str(o['key'])[:15]})" for o in as_list(node["owners"]))
        rows.append(
            (
                f"{node['name']}{' [STALE]' if node['stale'] else ''}",
                _subnets_cell(as_list(node["subnets"])),
                ", ".join(str(a) for a in _strings(node["addresses"])) or "-",
                ", ".join(_strings(node["keys"])) or "-",
                owners or "-",
                change_text(node, bool(as_dict(doc["history"])["known"])),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def _subnets_cell(subnets: Sequence[Doc], shown: int = 4) -> str:
    """At most ``shown`` subnets in a cell (a router may announce thousands);
    ``--format json`` lists them all."""
    texts = [subnet_text(s) for s in subnets[:shown]]
    if len(subnets) > shown:
        texts[-1] = f"... {len(subnets) - shown + 1} more"
    return ", ".join(texts) or "-"


def _strings(value: object) -> list[str]:
    assert isinstance(value, list)
    return [str(v) for v in value]


# --- graphviz -------------------------------------------------------------------------


def dot_string(*lines: str) -> str:
    """A DOT quoted string of one or more lines: host files are untrusted,
    so every quote and backslash is escaped, and lines are joined by DOT's
    own ``\\n``."""
    escaped = (line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") for line in lines)
    return '"' + "\\n".join(escaped) + '"'


def _node_line(node: Doc) -> str:
    label = [str(node["name"]), *(subnet_text(s) for s in as_list(node["subnets"]))]
    label += [f"Address {a}" for a in _strings(node["addresses"])]
    attrs = [f"label={dot_string(*label)}"]
    if node["addresses"]:
        attrs.append("peripheries=2")
    if node["stale"]:
        attrs += ['style="dashed,filled"', 'fillcolor="#fde2e2"', 'color="#b00020"', 'tooltip="stale"']
    if any(s["route"] for s in as_list(node["subnets"])):
        attrs.append('fillcolor="#e2ecfd"' if not node["stale"] else "")
        attrs.append('style="filled"' if not node["stale"] else "")
    return f"  {dot_string(str(node['name']))} [{', '.join(a for a in attrs if a)}];"


def render_dot(doc: Doc) -> str:
    nodes = as_list(doc["nodes"])
    reachable = [str(n["name"]) for n in nodes if n["addresses"]]
    title = f"{doc['source']}: {len(nodes)} nodes; double border: has an Address; dashed red: stale"
    lines = [
        "digraph syncd {",
        f"  graph [label={dot_string(title)}, labelloc=t, rankdir=LR, compound=true, fontsize=12];",
        '  node [shape=box, fontsize=10, fontname="monospace"];',
        "  edge [color=gray50, arrowsize=0.5];",
    ]
    edges = len(nodes) * len(reachable)
    cluster = edges > MAX_EDGES and len(reachable) > 1
    if cluster:
        lines.append("  subgraph cluster_address {")
        lines.append(f"    label={dot_string('nodes with an Address: every node may ConnectTo these')};")
        lines += ["  " + _node_line(n) for n in nodes if n["addresses"]]
        lines.append("  }")
        lines += [_node_line(n) for n in nodes if not n["addresses"]]
        first = dot_string(reachable[0])
        others = [str(n["name"]) for n in nodes if not n["addresses"]]
        lines += [f"  {dot_string(name)} -> {first} [lhead=cluster_address];" for name in others]
    else:
        lines += [_node_line(n) for n in nodes]
        lines += [
            f"  {dot_string(str(n['name']))} -> {dot_string(to)};" for n in nodes for to in reachable if to != n["name"]
        ]
    lines += _shared_lines(doc, nodes)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _shared_lines(doc: Doc, nodes: Sequence[Doc]) -> list[str]:
    """Each shared subnet as an ellipse, joined to the nodes announcing it."""
    lines = []
    announced: dict[str, list[str]] = {}
    for node in nodes:
        for subnet in as_list(node["subnets"]):
            if subnet["shared"]:
                announced.setdefault(str(subnet["subnet"]), []).append(str(node["name"]))
    for number, (shared, names) in enumerate(sorted(announced.items())):
        key = dot_string(f"shared {number}")
        lines.append(f"  {key} [shape=ellipse, style=dashed, label={dot_string('shared ' + shared)}];")
        lines += [f"  {dot_string(name)} -> {key} [style=dashed, arrowhead=none];" for name in names]
    return lines
