"""Shared fixtures.  Under ``SYNCD_REQUIRE_E2E=1`` (set by .ci/run) a skipped
end-to-end test is a failure: CI must prove the real thing works."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_REPO = ROOT / "examples" / "repo"


def corpora_dir() -> Path:
    return Path(os.environ.get("SYNCD_CORPORA", ROOT.parent / "shared" / "corpora"))


@pytest.fixture
def corpora() -> Path:
    path = corpora_dir()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path}: the shared corpora must be present in CI")
        pytest.skip(f"{path}: shared corpora not present (set SYNCD_CORPORA)")
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and item.get_closest_marker("e2e") is not None and os.environ.get("SYNCD_REQUIRE_E2E") == "1":
        report.outcome = "failed"
        report.longrepr = f"end-to-end test skipped, but SYNCD_REQUIRE_E2E=1: {report.longrepr}"
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.figures import FIGURES

    if FIGURES:
        terminalreporter.section("measured by the tests")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
