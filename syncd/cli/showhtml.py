"""``syncd show --format html``: one self-contained page (the one an admin
publishes from CI next to the repository), drawn from the document of
``show.network_doc``.

Self-contained: the CSS, the script and the map (SVG) are inline, and the
page's Content-Security-Policy lets it load nothing from anywhere.  The
table and the map are written here, so the page shows the whole network
without its script; the script only sorts (click a column), filters (type;
``#filter=TEXT&sort=N`` in the address sets the filter and sorts by
column N on load, ``-N`` descending) and records any
error of its own in the page (``#errors``), where a test reads it.

Everything taken from host files is escaped: a host file is untrusted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from syncd.cli.showformats import (
    MAX_EDGES,
    Doc,
    as_dict,
    as_list,
    change_text,
    history_text,
    not_nodes_lines,
    policy_lines,
    subnet_text,
    usage_line,
)

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b;background:#fff}
h1{font-size:1.4em;margin:0 0 .3em}
.meta{color:#555;margin:.1em 0}
.usage{display:inline-block;width:12em;height:.8em;background:#e6e6e6;vertical-align:middle;margin-left:.5em}
.usage span{display:block;height:100%;background:#2a6cd6;min-width:2px}
#map{max-width:100%;height:auto;border:1px solid #ddd;margin:1em 0}
#map .n circle{fill:#7a8a99}
#map .n.addr circle{fill:#2a6cd6}
#map .n.route circle{stroke:#0a7b3e;stroke-width:3}
#map .n.stale circle{fill:#c62828}
#map .n text{font-size:9px;fill:#333}
#map .n.off{opacity:.12}
#map line{stroke:#b9c2cc;stroke-width:.7}
#map .ring{fill:none;stroke:#dde3ea;stroke-dasharray:4 4}
input#filter{font-size:1em;padding:.3em .5em;width:24em;margin:.5em 0}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #e3e3e3;padding:.25em .5em;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f4f6f8;user-select:none;position:sticky;top:0}
details summary{cursor:pointer;color:#2a6cd6}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
tr.stale td{background:#fdecea}
.tag{font-size:.8em;border-radius:3px;padding:0 .3em;margin-left:.3em;background:#e2ecfd}
.tag.stale{background:#c62828;color:#fff}
code{font-size:.92em}
#errors{color:#b00020;white-space:pre-wrap}
"""

SCRIPT = """
(function(){
  var errors=document.getElementById('errors');
  window.addEventListener('error',function(e){errors.textContent+=String(e.message)+'\\n';});
  var input=document.getElementById('filter'),table=document.getElementById('nodes');
  var rows=Array.prototype.slice.call(table.tBodies[0].rows),shown=document.getElementById('shown');
  var marks={};
  Array.prototype.forEach.call(document.querySelectorAll('#map .n'),function(g){marks[g.getAttribute('data-name')]=g;});
  function apply(){
    var words=input.value.toLowerCase().split(/\\s+/).filter(Boolean),count=0;
    rows.forEach(function(row){
      var text=row.getAttribute('data-search');
      var on=words.every(function(w){return text.indexOf(w)>=0;});
      row.hidden=!on;if(on){count++;}
      var g=marks[row.getAttribute('data-name')];if(g){g.classList.toggle('off',!on);}
    });
    shown.textContent=count+' of '+rows.length+' nodes shown';
  }
  function sortBy(th){
    var column=th.cellIndex,up=!th.classList.contains('asc');
    Array.prototype.forEach.call(th.parentNode.cells,function(c){c.classList.remove('asc','desc');});
    th.classList.add(up?'asc':'desc');
    rows.sort(function(a,b){
      var x=a.cells[column].getAttribute('data-sort')||a.cells[column].textContent;
      var y=b.cells[column].getAttribute('data-sort')||b.cells[column].textContent;
      var order=x.localeCompare(y,undefined,{numeric:true,sensitivity:'base'});
      return up?order:-order;
    });
    rows.forEach(function(row){table.tBodies[0].appendChild(row);});
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th){
    th.addEventListener('click',function(){sortBy(th);});
  });
  input.addEventListener('input',apply);
  var given=new URLSearchParams(window.location.hash.slice(1));
  if(given.has('filter')){input.value=given.get('filter');}
  var column=/^(-?)(\\d+)$/.exec(given.get('sort')||'');
  var th=column&&table.tHead.rows[0].cells[Number(column[2])];
  if(th){sortBy(th);if(column[1]){sortBy(th);}}
  apply();
  document.body.setAttribute('data-ready','1');
})();
"""


def render_html(doc: Doc) -> str:
    nodes = as_list(doc["nodes"])
    known = bool(as_dict(doc["history"])["known"])
    title = f"syncd: {doc['source']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{len(nodes)} nodes, {sum(1 for n in nodes if n["stale"])} stale; generated '
        f"{escape(str(doc['generated_at']))}; {escape(history_text(doc))}</p>",
        *(f'<p class="meta">{escape(line)}</p>' for line in policy_lines(doc) if not line.startswith("allocate")),
        *(_usage(entry) for entry in as_list(doc["allocation"])),
        *(f'<p class="meta">{escape(line)}</p>' for line in not_nodes_lines(doc, 50)),
        _map(nodes),
        '<div><input id="filter" type="search" placeholder="filter: name, subnet, address, owner, stale" '
        'aria-label="filter nodes"> <span id="shown"></span></div>',
        _table(nodes, known),
        '<pre id="errors"></pre>',
        f"<script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _usage(entry: Doc) -> str:
    used, total = entry["used"], entry["total"]
    assert isinstance(used, int) and isinstance(total, int)
    percent = 100 * used / total if total else 0
    return (
        f'<p class="meta allocation">allocate {escape(usage_line(entry))}'
        f'<span class="usage" title="{percent:.4g}% used"><span style="width:{percent:.4f}%"></span></span></p>'
    )


def _table(nodes: Sequence[Doc], known: bool) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("Node", "Subnets", "Address", "Keys", "Owners", "Last signed change"))
    body = []
    for node in nodes:
        name = str(node["name"])
        subnets = as_list(node["subnets"])
        owners = as_list(node["owners"])
        addresses = [str(a) for a in as_list_of_str(node["addresses"])]
        keys = as_list_of_str(node["keys"])
        change = node["last_change"]
        when = str(change["when"]) if isinstance(change, dict) else ""
        stale = bool(node["stale"])
        search = " ".join(
            [name, *(subnet_text(s) for s in subnets), *addresses, *keys]
            + [f"{o['comment']} {o['key']}" for o in owners]
            + [change_text(node, known), "stale" if stale else ""]
        ).lower()
        cells = [
            f'<td data-sort="{escape(name)}"><b>{escape(name)}</b>'
            + ('<span class="tag stale">stale</span>' if stale else "")
            + "</td>",
            f"<td>{_subnets_html(subnets)}</td>",
            "<td>" + "<br>".join(escape(a) for a in addresses) + "</td>",
            "<td>" + "<br>".join(escape(k) for k in keys) + "</td>",
            "<td>"
            + "<br>".join(f"{escape(str(o['comment']))} <code>{escape(str(o['key']))}</code>" for o in owners)
            + "</td>",
            f'<td data-sort="{escape(when)}">{escape(change_text(node, known))}</td>',
        ]
        row_class = ' class="stale"' if stale else ""
        body.append(f'<tr{row_class} data-name="{escape(name)}" data-search="{escape(search)}">{"".join(cells)}</tr>')
    return f'<table id="nodes"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def as_list_of_str(value: object) -> list[str]:
    assert isinstance(value, list)
    return [str(v) for v in value]


def _subnets_html(subnets: Sequence[Doc], shown: int = 4) -> str:
    """A node's subnets, one a line; past ``shown``, the rest folded away
    (a router may announce hundreds)."""
    lines = [_subnet_html(s) for s in subnets]
    if len(lines) <= shown:
        return "<br>".join(lines)
    rest = "<br>".join(lines[shown:])
    return f"{'<br>'.join(lines[:shown])}<details><summary>{len(lines) - shown} more</summary>{rest}</details>"


def _subnet_html(subnet: Doc) -> str:
    tags = "".join(f'<span class="tag">{mark}</span>' for mark in ("route", "shared") if subnet[mark])
    return f"<code>{escape(str(subnet['subnet']))}</code>{tags}"


def _map(nodes: Sequence[Doc]) -> str:
    """Nodes on two rings: inside, those with an Address (others connect
    to them); outside, the rest.  Few enough edges: each drawn."""
    inner = [n for n in nodes if n["addresses"]]
    outer = [n for n in nodes if not n["addresses"]]
    r_in = max(60.0, len(inner) * 16 / (2 * math.pi))
    r_out = max(r_in + 140, len(outer) * 16 / (2 * math.pi)) if outer else r_in
    size = 2 * (r_out + 130)
    centre = size / 2
    places: dict[str, tuple[float, float, float]] = {}
    for ring, radius in ((inner, r_in), (outer, r_out)):
        for i, node in enumerate(ring):
            angle = 2 * math.pi * i / max(1, len(ring)) - math.pi / 2
            places[str(node["name"])] = (centre + radius * math.cos(angle), centre + radius * math.sin(angle), angle)
    svg = [
        f'<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size:.0f} {size:.0f}" '
        f'width="{min(size, 1100):.0f}" role="img" aria-label="map of the network">',
        f'<circle class="ring" cx="{centre:.1f}" cy="{centre:.1f}" r="{r_in:.1f}"><title>nodes with an Address: '
        "every node may ConnectTo these</title></circle>",
    ]
    reachable = [str(n["name"]) for n in inner]
    if len(nodes) * len(reachable) <= MAX_EDGES:
        for node in nodes:
            x1, y1, _ = places[str(node["name"])]
            for to in reachable:
                if to != node["name"]:
                    x2, y2, _ = places[to]
                    svg.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"/>')
    for node in nodes:
        svg.append(_map_node(node, places[str(node["name"])]))
    svg.append("</svg>")
    return "".join(svg)


def _map_node(node: Doc, place: tuple[float, float, float]) -> str:
    x, y, angle = place
    name = str(node["name"])
    classes = ["n"]
    if node["addresses"]:
        classes.append("addr")
    if any(s["route"] for s in as_list(node["subnets"])):
        classes.append("route")
    if node["stale"]:
        classes.append("stale")
    degrees = math.degrees(angle)
    flip = 90 < degrees % 360 < 270
    anchor = "end" if flip else "start"
    lx, ly = x + 9 * math.cos(angle), y + 9 * math.sin(angle)
    rotate = degrees + 180 if flip else degrees
    tip = "\n".join([name, *(subnet_text(s) for s in as_list(node["subnets"])), *as_list_of_str(node["addresses"])])
    return (
        f'<g class="{" ".join(classes)}" data-name="{escape(name)}"><title>{escape(tip)}</title>'
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5"/>'
        f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" dominant-baseline="middle" '
        f'transform="rotate({rotate:.1f} {lx:.1f} {ly:.1f})">{escape(name)}</text></g>'
    )
