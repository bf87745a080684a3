"""The `syncd check` command line: output shapes, exit codes, entry points."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.cli import main
from tests.conftest import EXAMPLE_REPO


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
    from syncd.cli import format_github
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
    assert code == 2 and "hosts: no such directory" in err
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
    import syncd.cli

    def broken(*args: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(syncd.cli, "run_check", broken)
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
