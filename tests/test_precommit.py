"""The real `pre-commit` tool runs the syncd-check hook against a git copy of
the example repository: the `repo: local` form shipped in the example (and
the README), and the form that installs syncd from its own git repository
(`pre-commit try-repo`, and the README's recipe with `pre-commit autoupdate`).

Those environments are built offline, from the wheelhouse `make test`
prepares (SYNCD_WHEELHOUSE): the tests themselves talk to no network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_REPO, ROOT, lacking

README = ROOT / "README.md"


def git_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PRE_COMMIT_HOME=str(home),
        GIT_AUTHOR_NAME="admin",
        GIT_AUTHOR_EMAIL="admin@example.org",
        GIT_COMMITTER_NAME="admin",
        GIT_COMMITTER_EMAIL="admin@example.org",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    return env


@pytest.fixture(scope="module")
def hook_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    wheelhouse = os.environ.get("SYNCD_WHEELHOUSE", "")
    if not wheelhouse or not Path(wheelhouse).is_dir():
        message = "SYNCD_WHEELHOUSE is not set up: run the tests with `make test`"
        lacking(message)
    env = git_env(tmp_path_factory.mktemp("pre-commit-home"))
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=wheelhouse)
    yield env


def git(repo: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True)


def try_repo(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "syncd-check", "--all-files"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_hook_passes_then_refuses_a_broken_host_file(hook_env: dict[str, str], tmp_path: Path) -> None:
    repo = tmp_path / "hosts-repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    git(repo, hook_env, "init", "-q", "-b", "main")
    git(repo, hook_env, "add", "-A")
    git(repo, hook_env, "commit", "-q", "-m", "the example network")

    ok = try_repo(repo, hook_env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "syncd check (tinc host files)" in ok.stdout and "Passed" in ok.stdout

    (repo / "hosts" / "evil").write_text("Subnet = 2002:102:304:4::/62\n")
    git(repo, hook_env, "add", "-A")
    bad = try_repo(repo, hook_env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Failed" in bad.stdout
    assert "hosts/my_pc:2: error[subnet-overlap]" in bad.stdout
    assert "hosts/evil:1: error[key-missing]" in bad.stdout


def hosts_repo(tmp_path: Path, env: dict[str, str]) -> Path:
    repo = tmp_path / "hosts-repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    git(repo, env, "init", "-q", "-b", "main")
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "the example network")
    return repo


def pre_commit(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def readme_block(language: str, marker: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)
    matching = [block for block in blocks if marker in block]
    assert len(matching) == 1, f"README: one ```{language} block with {marker!r}"
    return str(matching[0])


def syncd_on_path(tmp_path: Path, env: dict[str, str]) -> None:
    """`syncd` on PATH runs this checkout, as an installed syncd would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "syncd"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m syncd "$@"\n')
    wrapper.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"


def test_local_hook_as_shipped_and_as_in_the_readme(tmp_path: Path) -> None:
    shipped = yaml.safe_load((EXAMPLE_REPO / ".pre-commit-config.yaml").read_text())
    assert shipped == yaml.safe_load(readme_block("yaml", "repo: local"))
    env = git_env(tmp_path / "pre-commit-home")
    syncd_on_path(tmp_path, env)
    repo = hosts_repo(tmp_path, env)

    ok = pre_commit(repo, env, "run", "--all-files")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(r"^syncd check \(tinc host files\)\.+Passed$", ok.stdout, re.MULTILINE), ok.stdout

    # as a git hook: a commit with a broken host file is stopped
    installed = pre_commit(repo, env, "install")
    assert installed.returncode == 0, installed.stderr
    (repo / "hosts" / "evil").write_text("Subnet = 2002:102:304:4::/62\n")
    git(repo, env, "add", "-A")
    commit = subprocess.run(
        ["git", "-C", str(repo), "commit", "-m", "evil"], env=env, capture_output=True, text=True, check=False
    )
    assert commit.returncode == 1, commit.stdout + commit.stderr
    assert "hosts/my_pc:2: error[subnet-overlap]" in commit.stdout + commit.stderr
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True, check=True)
    assert log.stdout.split() == ["the", "example", "network"]


def syncd_release(tmp_path: Path, env: dict[str, str]) -> Path:
    """A git repository of this checkout's files, tagged v0.1.0 then v0.1.1,
    and an admin's clone of it (whose origin is that repository)."""
    upstream = tmp_path / "syncd-upstream"
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (upstream / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, upstream / name)
    git(upstream, env, "init", "-q", "-b", "main")
    git(upstream, env, "add", "-A")
    git(upstream, env, "commit", "-q", "-m", "syncd")
    git(upstream, env, "tag", "v0.1.0")
    checkout = tmp_path / "syncd-checkout"
    git(tmp_path, env, "clone", "-q", str(upstream), str(checkout))
    git(upstream, env, "commit", "-q", "--allow-empty", "-m", "a later release")
    git(upstream, env, "tag", "v0.1.1")
    return checkout


def test_remote_hook_made_as_the_readme_says_then_autoupdated(hook_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(hook_env, PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"))
    checkout = syncd_release(tmp_path, env)
    repo = hosts_repo(tmp_path, env)
    (repo / ".pre-commit-config.yaml").unlink()
    recipe = readme_block("sh", "remote get-url origin")
    recipe = re.sub(r"^SYNCD=.*$", f"SYNCD={checkout}", recipe, count=1, flags=re.MULTILINE)
    recipe = recipe.replace("pre-commit ", f"{sys.executable} -m pre_commit ")
    made = subprocess.run(
        ["bash", "-euc", recipe], cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert made.returncode == 0, made.stdout + made.stderr
    (hook,) = yaml.safe_load((repo / ".pre-commit-config.yaml").read_text())["repos"]
    assert hook["repo"] == str(tmp_path / "syncd-upstream")
    assert hook["rev"] == "v0.1.1", "autoupdate moves rev to the newest tag"
    assert (repo / ".git" / "hooks" / "pre-commit").is_file()

    ok = pre_commit(repo, env, "run", "--all-files")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(r"^syncd check \(tinc host files\)\.+Passed$", ok.stdout, re.MULTILINE), ok.stdout

    frozen = pre_commit(repo, env, "autoupdate", "--freeze")
    assert frozen.returncode == 0, frozen.stdout + frozen.stderr
    config = (repo / ".pre-commit-config.yaml").read_text()
    upstream_tip = subprocess.run(
        ["git", "-C", str(tmp_path / "syncd-upstream"), "rev-parse", "v0.1.1"], capture_output=True, text=True
    ).stdout.strip()
    assert re.search(rf"rev: {upstream_tip}  # frozen: v0\.1\.1$", config, re.MULTILINE), config
