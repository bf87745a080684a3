"""`make install` and `make uninstall`, run for real into temporary roots:
a virtual environment made by Debian's python3, the command where the
units expect it, the man page, completions and units; then removed again.

pip installs offline, from the wheelhouse `make test` prepares
(SYNCD_WHEELHOUSE): the tests talk to no network.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from syncd import __version__
from syncd.cli.clidoc import describe
from syncd.cli.main import build_parser
from tests.conftest import ROOT, lacking
from tests.servers import require

UNITS = ("syncd@.service", "syncd@.timer", "syncd-run@.service")
INSTALLED = ("syncd-run@inet6.service", "syncd@inet6.timer")


@pytest.fixture(scope="module")
def offline_env() -> dict[str, str]:
    wheelhouse = os.environ.get("SYNCD_WHEELHOUSE", "")
    if not wheelhouse or not Path(wheelhouse).is_dir():
        message = "SYNCD_WHEELHOUSE is not set up: run the tests with `make test`"
        lacking(message)
    if not Path("/usr/bin/python3").is_file():
        message = "/usr/bin/python3 (Debian's python3 with python3-venv) is not installed"
        lacking(message)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "MAKE"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=wheelhouse, PIP_CONFIG_FILE=os.devnull)
    return env


def make(env: dict[str, str], target: str, **variables: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("make"), "-C", str(ROOT), target, *(f"{k}={v}" for k, v in variables.items())],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def layout(root: Path) -> dict[str, Path]:
    return {
        "PREFIX": root / "opt" / "syncd",
        "BINDIR": root / "usr" / "local" / "bin",
        "MANDIR": root / "usr" / "local" / "share" / "man",
        "UNITDIR": root / "usr" / "local" / "lib" / "systemd" / "system",
        "BASHCOMPDIR": root / "usr" / "local" / "share" / "bash-completion" / "completions",
        "ZSHCOMPDIR": root / "usr" / "local" / "share" / "zsh" / "site-functions",
    }


def run(argv: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def systemctl(root: Path, verb: str) -> None:
    result = subprocess.run(
        [require("systemctl"), f"--root={root}", verb, *INSTALLED], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_symlink() or not p.is_dir())


def test_install_upgrade_uninstall(offline_env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    paths = layout(root)
    installed = make(offline_env, "install", **paths)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    syncd = paths["BINDIR"] / "syncd"
    assert syncd.readlink() == paths["PREFIX"] / "bin" / "syncd"
    assert run([str(syncd), "--version"], offline_env).strip() == f"syncd {__version__}"
    # the environment's own copy of syncd runs, not this checkout
    where = run(
        [str(paths["PREFIX"] / "bin" / "python"), "-I", "-c", "import syncd; print(syncd.__file__)"], offline_env
    )
    assert Path(where.strip()).is_relative_to(paths["PREFIX"])

    # the MIT license travels with the installed distribution
    licensed = run(
        [
            str(paths["PREFIX"] / "bin" / "python"),
            "-I",
            "-c",
            "import importlib.metadata as m; d = m.distribution('syncd'); "
            "print(d.metadata['License-Expression']); "
            "print(next(f for f in d.files if f.name == 'LICENSE').read_text())",
        ],
        offline_env,
    )
    assert licensed == "MIT\n" + (ROOT / "LICENSE").read_text() + "\n"

    on_path = dict(offline_env, PATH=f"{paths['BINDIR']}{os.pathsep}{offline_env['PATH']}", MANPAGER="cat")
    loaded = run([require("bash"), "-c", "source <(syncd completion bash); complete -p syncd"], on_path)
    assert loaded.strip() == "complete -F _syncd syncd"
    assert (paths["BASHCOMPDIR"] / "syncd").read_text() == run([str(syncd), "completion", "bash"], on_path)
    assert (paths["ZSHCOMPDIR"] / "_syncd").read_text().startswith("#compdef syncd\n")
    page = run([require("man"), "-l", str(paths["MANDIR"] / "man1" / "syncd.1")], on_path)
    for command in describe(build_parser()).commands:
        assert f"syncd {command.name} " in page, command.name

    for unit in UNITS:
        text = (paths["UNITDIR"] / unit).read_text()
        assert text == (ROOT / "contrib" / "systemd" / unit).read_text().replace("/usr/local/bin/syncd", str(syncd))
    systemctl(root, "enable")

    # an upgrade is the same command: a fresh environment in the same place
    (paths["PREFIX"] / "lib" / "stale-file").write_text("")
    again = make(offline_env, "install", **paths)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (paths["PREFIX"] / "lib" / "stale-file").exists()
    assert run([str(syncd), "--version"], offline_env).strip() == f"syncd {__version__}"

    removed = make(offline_env, "uninstall", **paths)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    # left behind: only what `systemctl enable` made in this root's /etc
    wants = root / "etc" / "systemd" / "system"
    assert files_under(root) == sorted(
        [wants / "multi-user.target.wants" / INSTALLED[0], wants / "timers.target.wants" / INSTALLED[1]]
    )


def test_install_into_a_staging_root(offline_env: dict[str, str], tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    installed = make(offline_env, "install", DESTDIR=stage)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    assert (stage / "usr/local/bin/syncd").readlink() == Path("/opt/syncd/bin/syncd")
    assert (stage / "opt/syncd/bin/syncd").read_text().startswith("#!/opt/syncd/bin/python\n")
    assert (
        "ExecStart=/usr/local/bin/syncd run " in (stage / "usr/local/lib/systemd/system/syncd-run@.service").read_text()
    )
    for name in ("usr/local/share/man/man1/syncd.1", "usr/local/share/zsh/site-functions/_syncd"):
        assert (stage / name).is_file(), name
    # nothing installed names the staging directory (scripts, pyvenv.cfg, .pyc)
    staged = str(stage).encode()
    naming = [p for p in files_under(stage) if not p.is_symlink() and staged in p.read_bytes()]
    assert naming == []
    version = run([str(stage / "opt/syncd/bin/python"), "-I", "-m", "syncd", "--version"], offline_env)
    assert version.strip() == f"syncd {__version__}"

    systemctl(stage, "enable")
    refused = make(offline_env, "uninstall", DESTDIR=stage)
    assert refused.returncode != 0
    assert "units still enabled" in refused.stderr and "syncd-run@inet6.service" in refused.stderr
    assert (stage / "opt/syncd/bin/syncd").is_file()
    systemctl(stage, "disable")
    removed = make(offline_env, "uninstall", DESTDIR=stage)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert files_under(stage) == []


def test_license_is_mit_as_pyproject_says() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the syncd authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pyproject["license"] == "MIT" and pyproject["license-files"] == ["LICENSE"]


def test_install_refuses_a_prefix_it_did_not_make(tmp_path: Path) -> None:
    prefix = tmp_path / "usr-local"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "other-program").write_text("keep me")
    result = make(dict(os.environ), "install", PREFIX=prefix)
    assert result.returncode != 0
    assert f"{prefix} is not empty and not a virtual environment" in result.stderr
    assert (prefix / "bin" / "other-program").read_text() == "keep me"
    assert len(files_under(prefix)) == 1


def test_install_refuses_a_python_the_units_cannot_see(tmp_path: Path) -> None:
    # a stand-in for a python3 under /home (pyenv, a user's build): only its
    # sys.base_prefix is asked before anything is installed
    python = tmp_path / "python3"
    python.write_text("#!/bin/sh\necho /home/admin/.pyenv/versions/3.12.4\n")
    python.chmod(0o755)
    result = make(dict(os.environ), "install", PREFIX=tmp_path / "opt", INSTALL_PYTHON=python)
    assert result.returncode != 0
    assert "lives in a home directory" in result.stderr and "ProtectHome=yes" in result.stderr
    assert not (tmp_path / "opt").exists()
