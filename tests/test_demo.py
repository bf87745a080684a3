"""The README's first command: the demo runs without root (as nobody, when
the tests run as root), twice in a row in the same place, and tells the
story it promises.  (``.ci/run`` also runs ``make demo`` itself.)"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, lacking
from tests.servers import require

STORY = [
    "== examples/repo becomes a signed git repository",
    "== First sync: every host file, verified, into ",
    "== An admin adds the node 'newbie' with a signed commit",
    "applied ",
    "only newbie is new; the other files keep their mtime",
    "== Someone pushes an unsigned commit claiming newbie's subnet",
    "not signed; nothing was installed",
    "exit code: 1 (1 = refused: nothing on the node changed)",
    "$ syncd status -c ",
    "NOT HEALTHY: last pass refused [signature]",
    "exit code: 1 (1 = not healthy: the last pass was refused",
    "$ syncd log -c ",
    "== Done: every step above went as it says",
]


def as_nobody(command: list[str]) -> list[str]:
    """``command`` as nobody when the tests run as root; as is otherwise."""
    if os.geteuid() != 0:
        return command
    nobody = pwd.getpwnam("nobody")
    return [require("setpriv"), f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", *command]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory an unprivileged user owns (pytest's tmp_path is root's),
    when that user can run this Python (``make demo`` on a fresh machine
    makes ``.venv`` from the system's python3; one under /root is not)."""
    probe = subprocess.run(
        as_nobody(["sh", "-c", 'exec "$0" -c ""', sys.executable]), capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        lacking(f"{sys.executable} cannot be run by an unprivileged user: {probe.stderr.strip()}")
    path = Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    yield path
    shutil.rmtree(path)


def demo(cwd: Path, path: str = "") -> subprocess.CompletedProcess[str]:
    """``bash examples/demo.sh`` in ``cwd`` as ``make demo`` runs it (syncd
    on PATH; ``path`` before it), as nobody when the tests run as root."""
    command = as_nobody(["bash", str(ROOT / "examples" / "demo.sh")])
    env = {"PATH": f"{path}{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(cwd), "LC_ALL": "C"}
    return subprocess.run(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, check=False
    )


def test_the_demo_tells_its_story_without_root_twice_in_a_row(workdir: Path) -> None:
    for _ in range(2):
        result = demo(workdir)
        assert result.returncode == 0, result.stdout[-3000:]
        position = 0
        for line in STORY:  # in this order
            found = result.stdout.find(line, position)
            assert found >= 0, f"the demo does not show {line!r} (after position {position})"
            position = found
        hosts = workdir / "demo" / "etc" / "tinc" / "inet6" / "hosts"
        assert sorted(p.name for p in hosts.iterdir()) == ["gateway", "my_laptop", "my_pc", "newbie"]
        assert "demo: FAILED" not in result.stdout


def test_the_demo_fails_when_a_claim_is_false(workdir: Path) -> None:
    """Its checks are real: a syncd that accepts the unsigned commit (exit 0
    there) makes the demo fail and say which claim broke."""
    fake = workdir / "bin"
    fake.mkdir()
    real = shutil.which("syncd", path=str(Path(sys.executable).parent))
    assert real is not None
    # the refused pass "succeeds": exit 0 instead of 1
    (fake / "syncd").write_text(
        f'#!/bin/sh\n"{real}" "$@"; code=$?\nif [ "$1" = sync ] && [ "$code" = 1 ]; then exit 0; fi\nexit $code\n'
    )
    (fake / "syncd").chmod(0o755)
    result = demo(workdir, f"{fake}:")
    assert result.returncode == 1
    assert "demo: FAILED: the unsigned commit was not refused with exit 1 (exit 0)" in result.stdout
