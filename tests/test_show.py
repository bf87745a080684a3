"""`syncd show` in every format, on the example network, on the three real
networks of the corpora and on a repository with a real signed history;
and stale nodes (`stale_after`) in `syncd check`, `syncd show` and
`syncd status`, with commit dates set just under and just over the limit."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.cli.main import main
from syncd.cli.status import node_status
from syncd.cli.worktree import check_worktree
from syncd.node.config import load_config
from syncd.rules.allocate import used_blocks
from syncd.rules.policy import parse_policy
from syncd.rules.stale import day
from syncd.tinc.subnet import parse_subnet
from tests.conftest import CORPORA, EXAMPLE_REPO, lacking
from tests.gitutil import SshKey, allowed_signers, commit, fingerprint_of, git, init_repo, make_key
from tests.syncenv import Hub, admin_and_signers, make_node, new_host, owner_line

DAY = 86400
YEAR = 365 * DAY


def show(*args: str, code: int = 0) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert main(["show", *args], out, err) == code, err.getvalue()
    return out.getvalue()


def show_json(*args: str) -> dict[str, Any]:
    doc = json.loads(show(*args, "--format", "json"))
    assert isinstance(doc, dict)
    return doc


def table_rows(text: str) -> list[str]:
    """The node table's rows: the lines after its header."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NODE "))
    return lines[header + 1 :]


def render_svg(dot: str, tmp_path: Path) -> str:
    """graphviz's own reading of the DOT output: it must lay it out."""
    if shutil.which("dot") is None:
        lacking("graphviz's dot is not installed (apt-get install graphviz)")
    source = tmp_path / "network.dot"
    source.write_text(dot)
    run = subprocess.run(["dot", "-Tsvg", str(source)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and not run.stderr, run.stderr
    assert run.stdout.lstrip().startswith("<?xml") and "</svg>" in run.stdout
    return run.stdout


# --- the example network --------------------------------------------------------------


def test_the_example_network_as_text(tmp_path: Path) -> None:
    text = show(str(EXAMPLE_REPO))
    assert "network " in text and ": 3 nodes, 0 stale, 0 errors and 0 warnings" in text
    assert "history:  history unknown (not a git repository)" in text
    assert "policy:   tinc 1.0, prefixes 2002:102:304::/48, join admins, stale_after not set" in text
    assert "route:    gateway: ::/0" in text
    assert "allocate: 2002:102:304::/48: 3 of 65,536 /64s used, next free 2002:102:304:1::/64" in text
    rows = {line.split()[0]: line for line in table_rows(text)}
    assert set(rows) == {"gateway", "my_laptop", "my_pc"}
    assert "2002:102:304::/64, ::/0 (route)" in rows["gateway"] and "1.2.3.4" in rows["gateway"]
    assert rows["my_pc"].rstrip().endswith("unknown") and "rsa 2048" in rows["my_pc"]


def test_the_example_network_as_json_dot_and_html(tmp_path: Path) -> None:
    doc = show_json(str(EXAMPLE_REPO))
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert nodes["gateway"]["addresses"] == ["1.2.3.4"]
    assert nodes["gateway"]["subnets"] == [
        {"subnet": "2002:102:304::/64", "route": False, "shared": False},
        {"subnet": "::/0", "route": True, "shared": False},
    ]
    assert nodes["my_pc"]["keys"] == ["rsa 2048"] and nodes["my_pc"]["last_change"] is None
    assert nodes["my_pc"]["stale"] is None  # no history: unknown, not "fresh"
    assert doc["history"] == {"known": False, "tip": None, "note": "no git history"}
    assert doc["allocation"] == [
        {"prefix": "2002:102:304::/48", "size": 64, "used": 3, "total": 65536, "next_free": "2002:102:304:1::/64"}
    ]
    dot = show(str(EXAMPLE_REPO), "--format", "dot")
    # tinc's ConnectTo: each node may connect to the gateway, the one node with an Address
    edges = set(re.findall(r'^  "(\w+)" -> "(\w+)";$', dot, re.M))
    assert edges == {("my_pc", "gateway"), ("my_laptop", "gateway")}
    assert "::/0 (route)" in dot and "peripheries=2" in dot
    svg = render_svg(dot, tmp_path)
    assert all(f">{name}</text>" in svg for name in nodes)
    out = tmp_path / "network.html"
    assert show(str(EXAMPLE_REPO), "--format", "html", "-o", str(out)) == ""
    page = out.read_text()
    assert page.count("<tr data-name=") == 3 and page.count('<g class="n') == 3
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing loaded from anywhere


def test_shared_subnets_and_hostile_text_in_dot(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    with (repo / "syncd.yaml").open("a") as policy:
        policy.write("shared:\n  - {subnet: 10.190.0.0/21, nodes: [my_pc, my_laptop]}\n")
    for name in ("my_pc", "my_laptop"):
        with (repo / "hosts" / name).open("a") as host:
            host.write("Subnet = 10.190.0.0/21\n")
    with (repo / "hosts" / "my_pc").open("a") as host:
        host.write('Address = evil"] ; x [label="\\\n')
    dot = show(str(repo), "--format", "dot")
    assert dot.count('-> "shared 0" [style=dashed, arrowhead=none];') == 2
    assert '"shared 0" [shape=ellipse, style=dashed, label="shared 10.190.0.0/21"];' in dot
    svg = render_svg(dot, tmp_path)
    assert "Address evil&quot;] ; x [label=&quot;\\" in svg  # a label, not DOT syntax
    page = show(str(repo), "--format", "html")
    assert '<span class="tag">shared</span>' in page
    assert "evil&quot;] ; x [label=&quot;\\" in page and 'evil"]' not in page  # text, never markup
    with (repo / "hosts" / "my_laptop").open("a") as host:
        host.write("Address = <script>alert(1)</script>\n")
    page = show(str(repo), "--format", "html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert page.count("<script>") == 1  # the page's own


def test_terminal_escapes_in_a_host_file_are_shown_not_obeyed(tmp_path: Path) -> None:
    """A host file under review may hold anything: an escape sequence (set
    the terminal's title, clear the screen) or a bidi override reaches the
    text table and the graph written out, never raw."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    with (repo / "hosts" / "my_pc").open("a") as host:
        host.write("Address = evil\x1b]0;pwned\x07\x1b[2J\u202e.example\x9b\n")
    for form in ("text", "dot"):
        out = show(str(repo), "--format", form)
        assert "evil\\x1b]0;pwned\\x07\\x1b[2J\\u202e.example\\x9b" in out, out
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]", out)


# --- the real networks ------------------------------------------------------------------


@pytest.mark.parametrize("network", CORPORA)
def test_a_real_network_in_every_format(corpora: Path, network: str, tmp_path: Path) -> None:
    repo = tmp_path / network
    shutil.copytree(corpora / network / "hosts", repo / "hosts")
    report = check_worktree(repo, None)[0]  # the full parse of each host, not syncd check's lean one
    names = sorted(report.hosts, key=str.lower)
    doc = show_json(str(repo))
    assert [n["name"] for n in doc["nodes"]] == names
    assert doc["findings"] == {"errors": report.errors, "warnings": report.warnings}
    assert all(n["last_change"] is None and n["stale"] is None for n in doc["nodes"])
    for name in names:  # every subnet of every node, as tincd reads it
        assert [s["subnet"] for s in doc["nodes"][names.index(name)]["subnets"]] == [
            str(s) for s, _ in report.hosts[name].subnets
        ]
    text = show(str(repo))
    assert f": {len(names)} nodes, 0 stale" in text and "history unknown" in text
    rows = [line.split()[0] for line in table_rows(text)]
    assert rows == names
    svg = render_svg(show(str(repo), "--format", "dot"), tmp_path)
    assert all(f">{name}</text>" in svg for name in names)
    page = show(str(repo), "--format", "html")
    assert page.count("<tr ") == len(names) and page.count('<g class="n') == len(names)


def test_the_largest_network_has_all_its_nodes(corpora: Path, tmp_path: Path) -> None:
    """retiolum: 242 files, 235 of them nodes tincd reads (7 names with '-')."""
    repo = tmp_path / "retiolum"
    shutil.copytree(corpora / "retiolum" / "hosts", repo / "hosts")
    assert len(list((repo / "hosts").iterdir())) == 242
    doc = show_json(str(repo))
    assert len(doc["nodes"]) == 235
    # the 7 files whose names tincd rejects (a '-'): counted, and named, but no node
    assert [(e["path"], e["codes"]) for e in doc["not_nodes"]] == [
        (f"hosts/{name}", ["name-invalid"])
        for name in (
            "maurice-home",
            "pinpox-ahorn",
            "tcac-0-1",
            "test-all-krebs-modules",
            "test-arch",
            "test-centos6",
            "test-centos7",
        )
    ]
    assert "ignored:  7 files are no node tincd reads: hosts/maurice-home (name-invalid), " in show(str(repo))
    with_address = [n for n in doc["nodes"] if n["addresses"]]
    assert 0 < len(with_address) < 235
    # 235 x 50-odd ConnectTo edges are too many to follow: one edge from each
    # node without an Address to the cluster of those with one
    dot = show(str(repo), "--format", "dot")
    assert dot.count(" [lhead=cluster_address];") == 235 - len(with_address)
    cluster = dot[dot.index("subgraph cluster_address {") : dot.index("  }\n")]
    assert set(re.findall(r'^    "(\w+)" \[', cluster, re.M)) == {n["name"] for n in with_address}


# --- a signed history, and stale nodes ----------------------------------------------------


def signed_repo(tmp_path: Path, now: float) -> tuple[Path, dict[str, SshKey]]:
    """The example network, committed by its admin a year and an hour ago
    (my_laptop owned by bob, my_pc by alice); alice renewed my_pc a year
    less an hour ago, as its owner."""
    keys = {name: make_key(tmp_path / "keys", name) for name in ("admin", "alice", "bob")}
    repo = init_repo(tmp_path / "repo")
    shutil.copytree(EXAMPLE_REPO, repo, dirs_exist_ok=True)
    with (repo / "syncd.yaml").open("a") as policy:
        policy.write("stale_after: 365d\n")
    allowed_signers(repo / "allowed_signers", (keys["admin"], ""))
    for name, owner in (("my_pc", "alice"), ("my_laptop", "bob")):
        with (repo / "hosts" / name).open("a") as host:
            host.write(owner_line(keys[owner]))
    commit(repo, "the example network", keys["admin"], date=f"@{int(now - YEAR - 3600)} +0000")
    with (repo / "hosts" / "my_pc").open("a") as host:
        host.write("# still here\n")
    commit(repo, "my_pc: renewed", keys["alice"], date=f"@{int(now - YEAR + 3600)} +0000")
    return repo, keys


def stale_lines(repo: Path) -> list[str]:
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(repo)], out, err) == 0, out.getvalue()  # warnings only
    return [line for line in out.getvalue().splitlines() if "[node-stale]" in line]


def test_stale_just_over_and_just_under(tmp_path: Path) -> None:
    now = time.time()
    repo, keys = signed_repo(tmp_path, now)
    lines = stale_lines(repo)
    old = day(now - YEAR - 3600)
    assert [line.split(":")[0] for line in lines] == ["hosts/gateway", "hosts/my_laptop"]  # not my_pc
    first = f"hosts/gateway:1: warning[node-stale]: stale: no signed change since {old} (365d1h ago)"
    assert lines[0].startswith(first)
    assert "no owners (only an admin can renew it)" in lines[0]
    assert f"owners: bob@laptop ({fingerprint_of(keys['bob'])})" in lines[1]
    # an unsigned edit renews nothing; a new file, not committed yet, is not stale
    with (repo / "hosts" / "my_laptop").open("a") as host:
        host.write("# touched\n")
    commit(repo, "unsigned", None)
    new_host("newbie", "2002:102:304:9::/64", 7)(repo)
    assert [line.split(":")[0] for line in stale_lines(repo)] == ["hosts/gateway", "hosts/my_laptop"]
    # a signed edit by its owner renews my_laptop
    with (repo / "hosts" / "my_laptop").open("a") as host:
        host.write("# renewed\n")
    commit(repo, "my_laptop: renewed", keys["bob"])
    assert [line.split(":")[0] for line in stale_lines(repo)] == ["hosts/gateway"]


def test_stale_in_a_linked_worktree_and_a_broken_one(tmp_path: Path) -> None:
    """A ".git" file (a linked worktree, a submodule) leads to the history."""
    repo, _ = signed_repo(tmp_path, time.time())
    git(repo, "worktree", "add", "-q", str(tmp_path / "linked"))
    assert [line.split(":")[0] for line in stale_lines(tmp_path / "linked")] == ["hosts/gateway", "hosts/my_laptop"]
    (tmp_path / "linked" / ".git").write_text("gitdir: /nowhere\n")
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(tmp_path / "linked")], out, err) == 2
    dot_git = tmp_path / "linked" / ".git"
    assert err.getvalue().startswith(f"syncd check: {dot_git}: not a git repository syncd can read")


def test_show_names_the_last_signed_change_and_its_role(tmp_path: Path) -> None:
    now = time.time()
    repo, keys = signed_repo(tmp_path, now)
    doc = show_json(str(repo))
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert doc["history"]["known"] and doc["history"]["note"] is None
    assert doc["policy"]["stale_after"] == "365d"
    pc, laptop = nodes["my_pc"]["last_change"], nodes["my_laptop"]["last_change"]
    assert pc["signer"] == "alice@home-pc" and pc["role"] == "owner:my_pc" and pc["summary"] == "my_pc: renewed"
    assert pc["key"] == fingerprint_of(keys["alice"])
    assert laptop["signer"] == "admin@example.org" and laptop["role"] == "admin"
    assert laptop["when"] == time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(int(now - YEAR - 3600)))
    assert {name: n["stale"] for name, n in nodes.items()} == {"gateway": True, "my_laptop": True, "my_pc": False}
    assert nodes["my_laptop"]["owners"] == [{"comment": "bob@laptop", "key": fingerprint_of(keys["bob"])}]
    text = show(str(repo))
    assert "3 nodes, 2 stale" in text and "my_laptop [STALE]" in text and "my_pc [STALE]" not in text
    assert f"{day(now - YEAR + 3600)} by alice@home-pc (owner:my_pc)" in text
    dot = show(str(repo), "--format", "dot")
    assert re.search(r'"my_laptop" \[[^\]]*tooltip="stale"', dot) and not re.search(r'"my_pc" \[[^\]]*stale', dot)
    page = show(str(repo), "--format", "html")
    assert page.count('<tr class="stale"') == 2


def test_show_without_allowed_signers_names_signers_by_their_owner_line(tmp_path: Path) -> None:
    now = time.time()
    repo, _ = signed_repo(tmp_path, now)
    (repo / "allowed_signers").unlink()
    doc = show_json(str(repo))
    pc = next(n for n in doc["nodes"] if n["name"] == "my_pc")["last_change"]
    assert pc["signer"] == "alice@home-pc" and pc["role"] is None
    assert doc["history"]["note"] == "no allowed_signers: signers are named by key only"


def test_stale_after_is_a_duration() -> None:
    policy, findings = parse_policy(b"stale_after: 365d\n")
    assert policy.stale_after == YEAR and findings == []
    assert parse_policy(b"stale_after: null\n")[0].stale_after is None
    _, findings = parse_policy(b"hosts_dir: hosts\nstale_after: soon\n")
    assert [(f.line, f.code) for f in findings] == [(2, "policy-invalid")]
    assert findings[0].message.startswith("stale_after: 'soon' is not a duration")


def test_used_blocks_counts_each_block_once() -> None:
    prefix = parse_subnet("2002:102:304::/48")
    taken = [parse_subnet(s) for s in ("2002:102:304::/64", "2002:102:304:100::/56", "2002:102:304:1ff::/64")]
    assert used_blocks(prefix, 64, taken) == 1 + 256  # the /64 inside the /56 is not counted twice
    assert used_blocks(prefix, 64, [parse_subnet("::/0")]) == 65536
    assert used_blocks(parse_subnet("10.0.0.0/24"), 32, [parse_subnet("10.0.0.5"), parse_subnet("10.1.0.0/16")]) == 1


def test_status_warns_when_the_nodes_own_file_is_stale(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    hub.change("stale after a year", lambda w: (w / "syncd.yaml").open("a").write("stale_after: 365d\n"))
    node = make_node(tmp_path / "node", str(hub.server), signers)
    assert node.sync()[0] == 0
    config = load_config(node.config)
    renewed = int(git(hub.work, "log", "-1", "--format=%ct", "--", "hosts/my_pc"))
    assert node_status(config, now=renewed + YEAR - 60)["warnings"] == []
    late = node_status(config, now=renewed + YEAR + 60)
    assert late["healthy"] is True  # a warning: nothing is removed, the node keeps working
    assert late["warnings"] == [
        f"this node's own host file hosts/my_pc is stale: no signed change since {day(renewed)} (365d1m ago), "
        "more than stale_after (365d); no owners (only an admin can renew it); "
        "renew it with any signed edit of the file, or remove the node"
    ]


def test_show_what_a_node_applied(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers)
    out, err = io.StringIO(), io.StringIO()
    assert main(["show", "-c", str(node.config)], out, err) == 2
    assert "network inet6: nothing applied yet" in err.getvalue()
    assert node.sync()[0] == 0
    applied = hub.tip
    hub.change("my_pc: moved", lambda w: (w / "hosts" / "my_pc").open("a").write("Address = 192.0.2.7\n"))
    doc = show_json("-c", str(node.config))  # not synced again: what the node applied, not the server's tip
    assert doc["source"] == f"inet6 (node my_pc) at {applied[:12]}"
    assert doc["history"] == {"known": True, "tip": applied, "note": None}
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert nodes["my_pc"]["addresses"] == []
    change = nodes["my_pc"]["last_change"]
    assert (change["commit"], change["signer"], change["role"]) == (applied, "admin@example.org", "admin")
    assert main(["show", str(tmp_path / "nowhere")], io.StringIO(), err) == 2
