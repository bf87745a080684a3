"""A hosts repository on a "server" and nodes that sync from it, for tests.

The admin works in a clone (``work``) and pushes signed commits to a bare
repository (``server.git``), exactly as in real life; nodes fetch from the
server through whichever transport the test picks.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from syncd.cli import main
from tests.conftest import EXAMPLE_REPO
from tests.gitutil import SshKey, allowed_signers, commit, git, make_key


class Hub:
    def __init__(self, root: Path, admin: SshKey) -> None:
        self.root = root
        self.admin = admin
        self.server = root / "srv" / "hosts.git"
        self.server.parent.mkdir(parents=True)
        git(self.server.parent, "init", "-q", "--bare", "-b", "main", str(self.server))
        self.work = root / "work"
        shutil.copytree(EXAMPLE_REPO, self.work, ignore=shutil.ignore_patterns(".pre-commit-config.yaml"))
        git(self.work, "init", "-q", "-b", "main")
        git(self.work, "remote", "add", "origin", str(self.server))
        self.tip = self.change("the example network", lambda w: None)

    def change(
        self,
        message: str,
        edit: Callable[[Path], object],
        key: SshKey | str | None = "admin",
        push: bool = True,
        date: str | None = None,
    ) -> str:
        edit(self.work)
        signer = self.admin if key == "admin" else key
        assert not isinstance(signer, str)
        sha = commit(self.work, message, signer, date=date, allow_empty=True)
        if push:
            git(self.work, "push", "-q", "--force", "origin", "HEAD:main")
        self.tip = sha
        return sha

    def host(self, name: str) -> Path:
        return self.work / "hosts" / name

    def reset(self, sha: str) -> None:
        """Point the admin's clone and the server's main back at ``sha``
        (e.g. to drop a commit a node refused before trying the next one)."""
        git(self.work, "reset", "-q", "--hard", sha)
        git(self.work, "push", "-q", "--force", "origin", "HEAD:main")
        self.tip = sha


@dataclass
class Node:
    root: Path
    config: Path

    @property
    def hosts(self) -> Path:
        return self.root / "etc" / "tinc" / "inet6" / "hosts"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def sync(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(["sync", "-c", str(self.config), *args], out, err)
        return code, out.getvalue(), err.getvalue()

    def snapshot(self) -> dict[str, tuple[bytes, int, int, int]]:
        """Every entry of the hosts dir: bytes, mode, mtime_ns, inode."""
        result = {}
        if self.hosts.exists():
            for entry in sorted(os.scandir(self.hosts), key=lambda e: e.name):
                st = entry.stat(follow_symlinks=False)
                data = Path(entry.path).read_bytes() if entry.is_file(follow_symlinks=False) else b""
                result[entry.name] = (data, st.st_mode, st.st_mtime_ns, st.st_ino)
        return result

    def files(self) -> dict[str, bytes]:
        return {name: data for name, (data, *_rest) in self.snapshot().items()}


def make_node(
    root: Path,
    url: str,
    signers: Path,
    node: str = "my_pc",
    **overrides: object,
) -> Node:
    # syncd creates only hosts/ inside the tinc directory: the node has the
    # rest, as after `syncd add-node` or a manual setup
    tinc_dir = root / "etc" / "tinc" / "inet6"
    tinc_dir.mkdir(parents=True, exist_ok=True)
    (tinc_dir / "tinc.conf").write_text(f"Name = {node}\n")
    config: dict[str, object] = {
        "net": "inet6",
        "node": node,
        "repo": {"url": url},
        "trust": {"allowed_signers": str(signers)},
        "tinc": {"dir": str(tinc_dir), "reload": "none"},
        "state_dir": str(root / "state"),
    }
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            nested = config.setdefault(section, {})
            assert isinstance(nested, dict)
            nested[sub] = value
        else:
            config[key] = value
    path = root / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)  # whatever the umask: syncd refuses a config others may write
    return Node(root, path)


def admin_and_signers(directory: Path) -> tuple[SshKey, Path]:
    admin = make_key(directory, "admin")
    return admin, allowed_signers(directory / "allowed_signers", (admin, ""))
