"""tinc 1.1 for the tests: ``tincd`` and ``tinc`` as ``make tinc11`` builds
them from the source in tests/vendor/tinc-1.1 (``SYNCD_TINC11`` names the
prefix; ``make test`` sets it).  Without the build the tests that need it
skip, and under ``CI=true`` fail (``conftest.lacking``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT, lacking

RELOAD_LINES = ("Got HUP signal", "Got Hangup signal", "Got 'reload' command")  # 1.0's SIGHUP; 1.1's; `tinc reload`


def prefix() -> Path:
    return Path(os.environ.get("SYNCD_TINC11") or ROOT / "build" / "tinc-1.1")


def sbin() -> Path:
    """The directory holding tinc 1.1's ``tincd`` and ``tinc``."""
    directory = prefix() / "sbin"
    for program in ("tincd", "tinc"):
        if not os.access(directory / program, os.X_OK):
            lacking(
                f"tinc 1.1 is not built ({directory / program} is missing): run `make tinc11` "
                "(needs meson, ninja-build, gcc, pkg-config and the -dev packages in tests/vendor/tinc-1.1/README.md)"
            )
    version = subprocess.run([directory / "tincd", "--version"], capture_output=True, text=True, timeout=10)
    if not version.stdout.startswith("tinc version 1.1"):
        lacking(f"{directory / 'tincd'} is not tinc 1.1: {version.stdout.splitlines()[:1]}")
    return directory


def reloads(log: str) -> int:
    """How often a tincd (1.0 or 1.1) says in its log that it reloaded."""
    return sum(log.count(line) for line in RELOAD_LINES)
