"""Shared fixtures, and the one switch: under ``CI=true`` (``.ci/run`` sets
it) a test that lacks a real component (tincd, sshd, the corpora, the
wheelhouse, root for network namespaces) fails instead of skipping, and so
does any other skip: CI must prove the real thing works."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from tests.syncenv import Hub, Node

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_REPO = ROOT / "examples" / "repo"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def lacking(message: str) -> NoReturn:
    """A real component this test needs is missing: skip, or fail in CI."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing component is a failure)")
    pytest.skip(message)


CORPORA = ("retiolum", "ffs-ffsl3", "icvpn")


def corpora_dir() -> Path:
    """Where the corpora of real host files are: ``$SYNCD_CORPORA``, else
    ``tests/corpora`` (``make corpora`` fetches them there)."""
    return Path(os.environ.get("SYNCD_CORPORA") or ROOT / "tests" / "corpora")


def corpora_problem() -> tuple[str, bool] | None:
    """Why the corpora cannot be used, and whether it is because they are
    missing (rather than differing from ``tests/corpora/SHA256SUMS``: the
    expectations of test_corpora.py hold for those bytes only)."""
    path = corpora_dir()
    missing = [name for name in CORPORA if not (path / name / "hosts").is_dir()]
    if missing:
        return (
            f"{path}: no corpora of real host files ({', '.join(missing)}): `make corpora` fetches them, "
            "or set SYNCD_CORPORA (tests/corpora/README.md)",
            True,
        )
    differ = []
    for line in (ROOT / "tests" / "corpora" / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        file = path / name
        if not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            differ.append(name)
    if differ:
        return (
            f"{path}: {len(differ)} files differ from the pinned corpora (first: {differ[0]}); "
            "tests/corpora/fetch gets the pinned ones",
            False,
        )
    return None


def skip_module_without_corpora() -> None:
    """At the top of a module whose tests use the corpora: without them its
    tests skip, said in one line.  (In CI each test fails instead, in the
    ``corpora`` fixture: a module that fails to load would stop the run.)"""
    problem = corpora_problem()
    if problem is not None and problem[1] and not in_ci():
        pytest.skip(problem[0], allow_module_level=True)


@pytest.fixture(scope="session")
def corpora() -> Path:
    problem = corpora_problem()
    if problem is not None:
        message, missing = problem
        if missing:
            lacking(message)
        pytest.fail(message)
    return corpora_dir()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and in_ci():
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {report.longrepr}"
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.figures import FIGURES

    if FIGURES:
        terminalreporter.section("measured by the tests")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home directory as ``$HOME`` (no ~/.ssh keys of the user's)."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A working copy of the example network (not a git repository)."""
    import shutil

    path = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, path)
    return path


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    """A hosts repository: the example network, signed by an admin whose key
    is in ``tmp_path/keys/allowed_signers``, pushed to a bare server."""
    from tests.syncenv import Hub, admin_and_signers

    admin, _ = admin_and_signers(tmp_path / "keys")
    return Hub(tmp_path / "hub", admin)


@pytest.fixture
def node(hub: Hub, tmp_path: Path) -> Node:
    """A node (my_pc) that syncs from ``hub``'s server."""
    from tests.syncenv import make_node

    return make_node(tmp_path / "node", str(hub.server), tmp_path / "keys" / "allowed_signers")
