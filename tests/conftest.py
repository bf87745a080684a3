"""Shared fixtures, and the one switch: under ``CI=true`` (``.ci/run`` sets
it) a test that lacks a real component (tincd, sshd, the corpora, the
wheelhouse, root for network namespaces) fails instead of skipping, and so
does any other skip: CI must prove the real thing works."""

from __future__ import annotations

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


def corpora_dir() -> Path:
    return Path(os.environ.get("SYNCD_CORPORA", ROOT.parent / "shared" / "corpora"))


@pytest.fixture
def corpora() -> Path:
    path = corpora_dir()
    if not path.is_dir():
        lacking(f"{path}: the corpora of real host files are not present (set SYNCD_CORPORA)")
    return path


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
