"""A hosts repository on a "server" and nodes that sync from it, for tests.

The admin works in a clone (``work``) and pushes signed commits to a bare
repository (``server.git``), exactly as in real life; nodes fetch from the
server through whichever transport the test picks.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from syncd.cli.main import main
from syncd.node.state import HEALTH_FILE, STATE_FILE
from tests.conftest import EXAMPLE_REPO
from tests.gitutil import SshKey, allowed_signers, commit, fingerprint_of, git, make_key
from tests.keyfactory import rsa_pem


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


# --- repository-held trust (DESIGN.md §6a): keys, owner lines, what a pass leaves ---

Edit = Callable[[Path], object]

# The owner-line comments, deliberately unlike the keys' own comments: a
# refusal must name an owner by the comment of its owner line.
COMMENTS = {"alice": "alice@home-pc", "bob": "bob@laptop", "carol": "carol@newbie", "dave": "dave@elsewhere"}


@dataclass(frozen=True)
class Keys:
    directory: Path
    admin: SshKey  # the admin every node's own allowed_signers lists
    admin2: SshKey  # the admin the repository rotates to
    alice: SshKey  # owns my_pc
    alice2: SshKey  # alice's next key
    bob: SshKey  # owns my_laptop
    carol: SshKey  # a newcomer
    dave: SshKey  # a stranger

    @property
    def local(self) -> Path:
        """The node's own allowed_signers: the first admin only."""
        return self.directory / "allowed_signers"


def owner_line(key: SshKey, comment: str | None = None) -> str:
    """``# syncd-owner: KEYTYPE BASE64 COMMENT`` for ``key``."""
    return f"# syncd-owner: {key.public_line()} {comment or COMMENTS[key.principal.split('@')[0]]}\n"


def add_owner(name: str, key: SshKey) -> Edit:
    def edit(work: Path) -> None:
        path = work / "hosts" / name
        path.write_text(path.read_text() + owner_line(key))

    return edit


def append(name: str, text: str) -> Edit:
    def edit(work: Path) -> None:
        path = work / "hosts" / name
        path.write_text(path.read_text() + text)

    return edit


def write(path: str, text: str) -> Edit:
    return lambda work: (work / path).write_text(text)


def new_host(name: str, subnet: str, seed: int, *owners: SshKey, key: bool = True) -> Edit:
    """A host file for a new node: a subnet, its owner lines and (unless
    ``key`` is false) an RSA public key."""
    body = f"Subnet = {subnet}\n" + "".join(owner_line(o) for o in owners)
    return write(f"hosts/{name}", body + (f"\n{rsa_pem(seed=seed)}" if key else ""))


def replace_in(name: str, old: str, new: str) -> Edit:
    def edit(work: Path) -> None:
        path = work / "hosts" / name
        path.write_text(path.read_text().replace(old, new))

    return edit


def rekey(name: str, old: SshKey, new: SshKey, comment: str) -> Edit:
    """The owner of ``name`` replaces its owner line for ``old`` by one for ``new``."""
    return replace_in(name, owner_line(old), owner_line(new, comment))


def admins(*keys: SshKey) -> Edit:
    """The repository's own allowed_signers, listing ``keys``."""
    return lambda work: allowed_signers(work / "allowed_signers", *((key, "") for key in keys))


def both(*edits: Edit) -> Edit:
    def edit(work: Path) -> None:
        for one in edits:
            one(work)

    return edit


def make_keys(directory: Path) -> Keys:
    names = ("admin", "admin2", "alice", "alice2", "bob", "carol", "dave")
    keys = Keys(directory, *(make_key(directory, name) for name in names))
    allowed_signers(keys.local, (keys.admin, ""))
    keys.local.chmod(0o644)  # whatever the umask: syncd refuses a file others may write
    return keys


def set_join(mode: str) -> Edit:
    def edit(work: Path) -> None:
        policy = work / "syncd.yaml"
        policy.write_text(policy.read_text() + f"join: {mode}\n")

    return edit


def synced_node(hub: Hub, root: Path, signers: Path, **overrides: object) -> Node:
    node = make_node(root, str(hub.server), signers, "my_pc", **overrides)
    code, _, err = node.sync()
    assert code == 0, err
    return node


def health(node: Node) -> dict[str, object]:
    data: dict[str, object] = json.loads((node.state / HEALTH_FILE).read_text())
    return data


def state_bytes(node: Node) -> bytes | None:
    path = node.state / STATE_FILE
    return path.read_bytes() if path.exists() else None


def accepted(node: Node) -> str:
    code, out, err = node.sync()
    assert code == 0, (out, err)
    assert health(node)["last_outcome"] == "applied"
    return out


def refused(node: Node, reason: str) -> str:
    """One refused pass: exit 1, ``reason`` in health.json, nothing changed."""
    before, state_before = node.snapshot(), state_bytes(node)
    code, out, err = node.sync()
    assert code == 1, (out, err)
    assert node.snapshot() == before, "a refused sync changed the installed files"
    assert state_bytes(node) == state_before, "a refused sync changed state.json"
    assert health(node)["last_error_reason"] == reason, err
    return err


def names(err: str, sha: str, signer: str, key: SshKey, role: str, path: str | None) -> None:
    """The refusal names the commit, the signer (and its key's fingerprint),
    the role it had and the first path outside it."""
    assert f"commit {sha[:12]} " in err, err
    assert f"signed by {signer} ({fingerprint_of(key)})" in err, err
    assert role in err, err
    if path is not None:
        assert f": {path} " in err, err


NO_ROLE = "no role at the parent commit (not an admin, owns no node)"


def no_role(err: str, sha: str, key: SshKey) -> None:
    """A refusal of a key with no role at all: it has no name there either."""
    names(err, sha, "unknown key", key, NO_ROLE, None)


def last_applied(node: Node) -> object:
    return json.loads(state_bytes(node) or b"{}").get("last_applied")


def logged(node: Node) -> list[dict[str, object]]:
    """``syncd log --format json``, newest first."""
    out, err = io.StringIO(), io.StringIO()
    assert main(["log", "-c", str(node.config), "--format", "json"], out, err) == 0, err.getvalue()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def roles(node: Node, n: int) -> list[tuple[str, object, object]]:
    """The newest ``n`` applied commits as (commit, signer, role)."""
    return [(e["commit"], e["signer"], e["role"]) for e in logged(node)[:n]]  # type: ignore[misc]


def files_of(hub: Hub) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((hub.work / "hosts").iterdir())}
