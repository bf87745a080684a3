"""First contact: the mistakes a new user makes get a message that says what
is wrong and what to do, in the right exit class (``errors.outcome``)."""

from __future__ import annotations

import io
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.cli.main import main
from syncd.errors import EXIT_REFUSED, EXIT_USAGE
from tests.gitutil import allowed_signers, make_key
from tests.servers import require
from tests.syncenv import Hub, admin_and_signers, health, make_node


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


# --- permission: the path and the user, never "repair the JSON" ----------------------------


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory another user may enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="syncd-advice-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def unprivileged(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``python -m syncd ARGV`` as a user who is not root (nobody, when
    the tests run as root), and name that user as syncd names it."""
    command = [sys.executable, "-m", "syncd", *argv]
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        command = [
            require("setpriv"),
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
            *command,
        ]
        user = f"user nobody (uid {nobody.pw_uid})"
    else:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False), user


def test_status_without_permission_on_the_state_says_permission_and_who(shared_tmp: Path) -> None:
    admin, signers = admin_and_signers(shared_tmp / "keys")
    hub = Hub(shared_tmp / "hub", admin)
    node = make_node(shared_tmp / "node", str(hub.server), signers)
    assert node.sync()[0] == 0
    state = node.state / "state.json"
    node.state.chmod(0o700)
    state.chmod(0o600 if os.geteuid() == 0 else 0)  # root's own 0600 file, as a node has it
    proc, user = unprivileged(["status", "-c", str(node.config)])
    state.chmod(0o600)
    denied = node.state if os.geteuid() == 0 else state  # nobody cannot even see into the directory
    assert proc.returncode == EXIT_USAGE, proc.stderr
    first, hint = proc.stderr.splitlines()
    assert first == f"syncd status: {state}: permission denied to {user}"
    assert (
        hint
        == f"  hint: run syncd as root (sudo), as its units do, or give {user} read and write permission on {denied}"
    )
    assert "backup" not in proc.stderr and "JSON" not in proc.stderr


def test_a_config_file_the_user_may_not_read(shared_tmp: Path) -> None:
    config = shared_tmp / "inet6.yaml"
    config.write_text("net: inet6\n")
    config.chmod(0o600 if os.geteuid() == 0 else 0)
    proc, user = unprivileged(["status", "-c", str(config)])
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert proc.stderr.splitlines()[0] == f"syncd status: {config}: permission denied to {user}"


# --- repo.url: a local path that is no repository is a config error -------------------------


@pytest.mark.parametrize("kind", ["missing", "file-url", "empty-dir", "a-file"])
def test_a_repository_path_that_is_no_repository_is_a_config_error(tmp_path: Path, kind: str) -> None:
    _admin, signers = admin_and_signers(tmp_path / "keys")
    target = tmp_path / "srv" / "hosts.gitt"  # the typo
    url, what = str(target), "no such directory"
    if kind == "file-url":
        url = f"file://{target}"
    elif kind == "empty-dir":
        target.mkdir(parents=True)
        what = "not a git repository"
    elif kind == "a-file":
        target.parent.mkdir(parents=True)
        target.write_text("")
        what = "not a directory"
    node = make_node(tmp_path / "node", url, signers)
    code, _, err = node.sync()
    assert code == EXIT_USAGE, err
    first, hint = err.splitlines()
    assert first == f"syncd sync: no repository URL could be fetched: {url}: {what}"
    assert hint.startswith("  hint: check repo.url (and repo.mirrors) in the node's config: a local path must be")
    assert "NotGitRepository" not in err
    assert health(node)["last_error_reason"] == "config"  # `run` waits the interval: no retry storm


def test_a_good_mirror_after_a_mistyped_local_url_is_used(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(tmp_path / "nope.git"), signers, repo__mirrors=[str(hub.server)])
    code, _, err = node.sync()
    assert code == 0, err
    assert node.files()


# --- allowed_signers: what the line lacks, and the namespace that refuses ----------------------


def test_a_bare_public_key_line_in_allowed_signers(tmp_path: Path) -> None:
    admin = make_key(tmp_path / "keys", "admin")
    signers = tmp_path / "keys" / "allowed_signers"
    shutil.copy(admin.public, signers)  # `cat id_ed25519.pub >> allowed_signers`
    node = make_node(tmp_path / "node", str(Hub(tmp_path / "hub", admin).server), signers)
    code, _, err = node.sync()
    assert code == EXIT_USAGE
    kind = admin.public.read_text().split()[0]
    assert err == (
        f"syncd sync: {signers}:1: the line starts with the key type {kind}, not with the "
        "signer's principal\n"
        "  hint: each line is PRINCIPALS [OPTIONS] KEYTYPE BASE64: put the signer's name first, e.g. "
        f'alice@example.org namespaces="git" {kind} AAAA...\n'
    )


def test_a_key_whose_namespaces_exclude_git_is_named_with_them(tmp_path: Path) -> None:
    admin = make_key(tmp_path / "keys", "admin")
    signers = allowed_signers(tmp_path / "keys" / "allowed_signers", (admin, 'namespaces="file"'))
    node = make_node(tmp_path / "node", str(Hub(tmp_path / "hub", admin).server), signers)
    code, _, err = node.sync()
    assert code == EXIT_REFUSED
    first, hint = err.splitlines()
    assert "(the tip is signed by SHA256:" in first
    assert 'line 1 (admin@example.org) lists it with namespaces="file", without git): nothing to trust' in first
    assert hint == '  hint: git signs commits in namespace "git": write namespaces="git" on that line'
    assert node.files() == {}


def test_a_key_no_line_lists_is_said_so_without_advising_to_trust_it(tmp_path: Path) -> None:
    admin = make_key(tmp_path / "keys", "admin")
    _other, signers = admin_and_signers(tmp_path / "other")
    node = make_node(tmp_path / "node", str(Hub(tmp_path / "hub", admin).server), signers)
    code, _, err = node.sync()
    assert code == EXIT_REFUSED
    assert ": no line lists that key): nothing to trust" in err
    assert "never a key just because a server presents it" in err
