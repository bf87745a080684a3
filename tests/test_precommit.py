"""The real `pre-commit` tool runs the syncd-check hook from this project
(`pre-commit try-repo`) against a git copy of the example repository.

The hook's environment is built offline, from the wheelhouse `make test`
prepares (SYNCD_WHEELHOUSE): the test itself talks to no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_REPO, ROOT


@pytest.fixture(scope="module")
def hook_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    wheelhouse = os.environ.get("SYNCD_WHEELHOUSE", "")
    if not wheelhouse or not Path(wheelhouse).is_dir():
        message = "SYNCD_WHEELHOUSE is not set up: run the tests with `make test`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path_factory.mktemp("pre-commit-home")
    env = dict(os.environ)
    env.update(
        PRE_COMMIT_HOME=str(home),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=wheelhouse,
        GIT_AUTHOR_NAME="admin",
        GIT_AUTHOR_EMAIL="admin@example.org",
        GIT_COMMITTER_NAME="admin",
        GIT_COMMITTER_EMAIL="admin@example.org",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
    )
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
