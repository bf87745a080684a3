"""The `syncd check` command line: output shapes, exit codes, entry points."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from syncd.cli.main import main
from tests.conftest import EXAMPLE_REPO
from tests.syncenv import Hub, Node


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    key = (repo / "hosts" / "my_laptop").read_text().split("\n\n", 1)[1]
    (repo / "hosts" / "evil").write_text("Subnet = 2002:102:304:4::/62\nSubnet: 10.0.0.1\n\n" + key)
    return repo


def test_example_repo_is_clean() -> None:
    code, out, err = run("check", str(EXAMPLE_REPO))
    assert (code, out) == (0, "")
    assert "3 nodes, 4 subnets: 0 errors, 0 warnings" in err


def test_text_output_shape(broken: Path) -> None:
    code, out, _ = run("check", str(broken))
    assert code == 1
    route_hint = (
        "the more specific subnet wins in tinc; list 2002:102:304:4::/62 under routes for evil "
        "in syncd.yaml if it is an intended route"
    )
    assert out.splitlines() == [
        "hosts/evil:1: error[subnet-overlap]: 2002:102:304:4::/62 covers 2002:102:304:4::/64 of node my_pc "
        f"(hosts/my_pc:2); {route_hint}",
        "hosts/evil:1: error[subnet-overlap]: 2002:102:304:4::/62 covers 2002:102:304:5::/64 of node my_laptop "
        f"(hosts/my_laptop:2); {route_hint}",
        "hosts/evil:2: error[syntax]: 'Subnet:' is not a variable name, so tincd ignores the line: "
        "write 'Subnet = 10.0.0.1'",
        "hosts/evil:4: error[key-duplicate]: the same public key is used by evil, my_laptop: "
        "each node needs its own key pair",
        "hosts/my_laptop:2: error[subnet-overlap]: 2002:102:304:5::/64 overlaps 2002:102:304:4::/62 of node evil "
        f"(hosts/evil:1); {route_hint}",
        "hosts/my_laptop:4: error[key-duplicate]: the same public key is used by my_laptop, evil: "
        "each node needs its own key pair",
        "hosts/my_pc:2: error[subnet-overlap]: 2002:102:304:4::/64 overlaps 2002:102:304:4::/62 of node evil "
        f"(hosts/evil:1); {route_hint}",
    ]


def test_json_output(broken: Path) -> None:
    code, out, _ = run("check", "--format", "json", str(broken))
    assert code == 1
    doc = json.loads(out)
    assert doc["nodes"] == 4 and doc["subnets"] == 5
    overlaps = [f for f in doc["findings"] if f["code"] == "subnet-overlap"]
    assert all(set(f) == {"path", "line", "severity", "code", "message", "related"} for f in overlaps)
    assert all(f["severity"] == "error" for f in overlaps)
    # each side of an overlap names the other
    assert [(f["path"], f["line"], f["related"]) for f in overlaps] == [
        ("hosts/evil", 1, [{"path": "hosts/my_pc", "line": 2}]),
        ("hosts/evil", 1, [{"path": "hosts/my_laptop", "line": 2}]),
        ("hosts/my_laptop", 2, [{"path": "hosts/evil", "line": 1}]),
        ("hosts/my_pc", 2, [{"path": "hosts/evil", "line": 1}]),
    ]


def test_github_output(broken: Path) -> None:
    code, out, _ = run("check", "--format", "github", str(broken))
    assert code == 1
    lines = out.splitlines()
    assert lines[2] == (
        "::error file=hosts/evil,line=2,title=syntax::'Subnet:' is not a variable name, "
        "so tincd ignores the line: write 'Subnet = 10.0.0.1'"
    )
    assert len(lines) == 7
    # the new file that claims others' subnets is annotated, not only the files it overlaps
    assert lines[0].startswith(
        "::error file=hosts/evil,line=1,title=subnet-overlap::2002:102:304:4::/62 covers 2002:102:304:4::/64 "
        "of node my_pc (hosts/my_pc:2);"
    )


def test_github_escapes_properties_and_newlines() -> None:
    from syncd.cli.formats import format_github
    from syncd.findings import error

    line = format_github(error("hosts/a,b:c", 3, "syntax", "50% done\nnext"))
    assert line == "::error file=hosts/a%2Cb%3Ac,line=3,title=syntax::50%25 done%0Anext"


def test_strict_fails_on_warnings(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    with (repo / "hosts" / "my_pc").open("a") as fh:
        fh.write("Colour = blue\n")
    assert run("check", str(repo))[0] == 0
    code, out, _ = run("check", "--strict", str(repo))
    assert code == 1 and "warning[variable-unknown]" in out


def test_hosts_dir_uses_default_policy_and_shows_the_directory(tmp_path: Path) -> None:
    code, out, _ = run("check", "--hosts-dir", str(EXAMPLE_REPO / "hosts"))
    # Without the repo's routes, the gateway's ::/0 covers the others' /64s.
    assert code == 1
    assert {line.split(":")[0] for line in out.splitlines()} == {
        str(EXAMPLE_REPO / "hosts" / "gateway"),
        str(EXAMPLE_REPO / "hosts" / "my_pc"),
        str(EXAMPLE_REPO / "hosts" / "my_laptop"),
    }
    code, out, _ = run("check", str(EXAMPLE_REPO), "--hosts-dir", str(EXAMPLE_REPO / "hosts"))
    assert (code, out) == (0, "")


def test_symlink_in_hosts_dir(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    (repo / "hosts" / "sneaky").symlink_to("/etc/passwd")
    code, out, _ = run("check", str(repo))
    assert code == 1 and out.startswith("hosts/sneaky:1: error[file-type]: a symlink")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = run("check", str(tmp_path / "missing"))
    assert code == 2 and "no such directory" in err
    code, _, err = run("check", str(tmp_path))  # no hosts/ in it
    assert code == 2 and f"syncd check: {tmp_path}: not a hosts repository (no syncd.yaml, no hosts/ directory)" in err
    assert "  hint: run syncd check in a clone of the hosts repository, or name it: syncd check REPO" in err
    (tmp_path / "syncd.yaml").write_text("hosts_dir: nodes\n")  # a repository, with its hosts directory missing
    code, _, err = run("check", str(tmp_path))
    assert code == 2 and f"{tmp_path / 'nodes'}: no such directory" in err
    assert run("check", "--format", "xml")[0] == 2
    assert run("frobnicate")[0] == 2


def test_policy_findings_are_reported_with_the_hosts(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    (repo / "syncd.yaml").write_text("prefixes: [2002:102:304::/48]\nroutes: {gateway: ['::/0'], ghost: []}\n")
    code, out, _ = run("check", str(repo))
    assert code == 1
    assert out.splitlines() == ["syncd.yaml:2: error[policy-invalid]: routes: names 'ghost', which has no host file"]


def test_python_dash_m_and_console_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "check", str(EXAMPLE_REPO)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    script = Path(sys.executable).with_name("syncd")
    assert script.exists(), "the syncd console script is installed next to the interpreter"
    result = subprocess.run([str(script), "check", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "--hosts-dir" in result.stdout


def test_scripts_in_a_nodes_own_hosts_dir_are_not_findings(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    shutil.copytree(EXAMPLE_REPO / "hosts", hosts)
    (hosts / "my_pc-up").write_text("#!/bin/sh\n")
    code, out, _ = run("check", str(EXAMPLE_REPO), "--hosts-dir", str(hosts))
    assert (code, out) == (0, "")
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    (repo / "hosts" / "my_pc-up").write_text("#!/bin/sh\n")
    code, out, _ = run("check", str(repo))  # in a repository, a script is always refused
    assert code == 1 and "tinc script name" in out


def test_an_internal_error_is_not_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    import syncd.cli.main

    def broken(*args: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(syncd.cli.main, "run_check", broken)
    code, _, err = run("check", str(EXAMPLE_REPO))
    assert code == 3
    assert "internal error: KeyError: 'surprise'" in err


def test_summary_counts_are_singular_for_one(tmp_path: Path) -> None:
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "solo").write_text("Subnet = 10.0.0.1\nColour = blue\n")  # no key; an unknown variable
    code, out, err = run("check", str(tmp_path))
    assert code == 1
    assert [line.split(": ")[1] for line in out.splitlines()] == ["error[key-missing]", "warning[variable-unknown]"]
    assert err == "syncd check: 1 node, 1 subnet: 1 error, 1 warning\n"


# --- sync --dry-run: the diff of each file ------------------------------------------------


def test_sync_dry_run_shows_new_files_in_full(hub: Hub, node: Node) -> None:
    code, out, _ = node.sync("--dry-run")
    assert code == 0
    gateway = (hub.host("gateway")).read_text().splitlines()
    sections = out.split("\n\n")
    assert len(sections) == 4  # the plan, then one diff a file
    assert sections[1].splitlines() == [
        "--- /dev/null",
        "+++ b/hosts/gateway",
        f"@@ -0,0 +1,{len(gateway)} @@",
        *(f"+{line}" for line in gateway),
    ]
    assert sections[3].startswith("--- /dev/null\n+++ b/hosts/my_pc\n")
    assert "\033" not in out  # no colours off a terminal
    assert node.snapshot() == {}


def test_sync_dry_run_diffs_installed_against_desired(hub: Hub, node: Node) -> None:
    assert node.sync()[0] == 0
    laptop = hub.host("my_laptop").read_text().splitlines()

    def edit(work: Path) -> None:
        with (work / "hosts" / "gateway").open("a") as fh:
            fh.write("Port = 656\n")
        (work / "hosts" / "my_laptop").unlink()

    hub.change("gateway moves to port 656, my_laptop retires", edit)
    # a local edit behind syncd's back, with a terminal escape and no final newline
    my_pc = node.hosts / "my_pc"
    original = my_pc.read_text()
    my_pc.write_text(original.replace("Subnet = 2002:0102:0304:0004::/64\n", "Subnet = ::/0\n") + "Weight = 1\x1b[2J")
    before = node.snapshot()
    code, out, err = node.sync("--dry-run")
    assert code == 0, err
    plan, gateway, my_pc_diff, removed = out.split("\n\n")
    assert plan.splitlines()[1:] == ["  ~ gateway", "  ~ my_pc", "  - my_laptop"]
    assert gateway.splitlines()[:2] == ["--- a/hosts/gateway", "+++ b/hosts/gateway"]
    assert [line for line in gateway.splitlines()[2:] if line[:1] in "+-@"] == [
        gateway.splitlines()[2],
        "+Port = 656",
    ]
    assert gateway.splitlines()[2].startswith("@@ -")
    assert gateway.endswith("\n -----END RSA PUBLIC KEY-----\n+Port = 656")
    changed = [line for line in my_pc_diff.splitlines()[2:] if line[:1] in "+-\\"]
    assert changed == [
        "-Subnet = ::/0",
        "+Subnet = 2002:0102:0304:0004::/64",
        "-Weight = 1\\x1b[2J",
        "\\ No newline at end of file",
    ]
    assert removed.splitlines() == [
        "--- a/hosts/my_laptop",
        "+++ /dev/null",
        f"@@ -1,{len(laptop)} +0,0 @@",
        *(f"-{line}" for line in laptop),
    ]
    assert node.snapshot() == before


def test_sync_dry_run_colours_the_diff_on_a_terminal(hub: Hub, node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert node.sync()[0] == 0
    hub.change("gateway moves to port 656", lambda w: (w / "hosts" / "gateway").open("a").write("Port = 656\n"))
    master, slave = pty.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST  # no "\r\n" for "\n": read back what was written
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        with open(slave, "w", closefd=False) as tty:
            assert main(["sync", "-c", str(node.config), "--dry-run"], tty, io.StringIO()) == 0
        received = b""
        for _ in range(100):  # bounded: the output is a few hundred bytes
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                break
            received += os.read(master, 65536)
    finally:
        os.close(master)
        os.close(slave)
    lines = received.decode().split("\n")
    assert "\033[1m--- a/hosts/gateway\033[m" in lines
    assert "\033[1m+++ b/hosts/gateway\033[m" in lines
    assert "\033[32m+Port = 656\033[m" in lines
    assert any(line.startswith("\033[36m@@ -") for line in lines)
    assert "  ~ gateway" in lines  # the plan itself is plain


def test_plan_diff_of_unreadable_or_unchanged_files() -> None:
    from syncd.rules.plan import make_plan

    desired = {"a": b"Subnet = 10.0.0.1\n", "b": b"Subnet = 10.0.0.2\n"}
    plan = make_plan(desired, {"a": "0" * 64, "b": "1" * 64, "c": "2" * 64}, {"c": "2" * 64})
    assert (plan.update, plan.remove) == (("a", "b"), ("c",))
    installed = {"b": desired["b"]}  # "b" changed back since the plan; "a" and "c" cannot be read
    assert plan.diff(installed.get) == [
        ["(hosts/a: the installed file cannot be read)"],
        ["(hosts/c: the installed file cannot be read)"],
    ]
    installed = {"a": b"Subnet = 10.0.0.9", "b": desired["b"], "c": b"\r\n"}
    assert plan.diff(installed.get) == [
        [
            "--- a/hosts/a",
            "+++ b/hosts/a",
            "@@ -1 +1 @@",
            "-Subnet = 10.0.0.9",
            "\\ No newline at end of file",
            "+Subnet = 10.0.0.1",
        ],
        ["--- a/hosts/c", "+++ /dev/null", "@@ -1 +0,0 @@", "-\\x0d"],
    ]
