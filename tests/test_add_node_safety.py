"""`syncd add-node` never clobbers a node: what is already in the tinc
directory stays unless `--force`, every such file is named (in `--dry-run`
too), a write that fails leaves everything as it was, the network name is
never guessed from a folder, and the printed signing step works as pasted."""

from __future__ import annotations

import errno
import io
import os
import re
import subprocess
from pathlib import Path

import pytest

from syncd.cli.addnode import tinc_dir_of
from syncd.cli.main import main
from syncd.errors import UsageError
from tests.gitutil import allowed_signers, env, git, make_key
from tests.syncenv import Hub, make_node

MY_PC_CONF = "Name = my_pc\nConnectTo = gateway\n"


pytestmark = pytest.mark.usefixtures("home")  # an empty home (conftest)


def add(repo: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["add-node", *args, "--repo", str(repo), "--rsa-bits", "2048"], out, err)
    return code, out.getvalue(), err.getvalue()


def tree(*dirs: Path) -> dict[str, bytes]:
    """Every file under ``dirs`` with its bytes (directories as b"/")."""
    return {str(p): (p.read_bytes() if p.is_file() else b"/") for d in dirs if d.exists() for p in sorted(d.rglob("*"))}


def test_an_existing_tinc_conf_is_kept_and_named_without_force(repo: Path, tmp_path: Path) -> None:
    """The reported case: /etc/tinc/inet6 of my_pc, no key pair yet."""
    tinc = tmp_path / "tinc" / "inet6"
    tinc.mkdir(parents=True)
    (tinc / "tinc.conf").write_text(MY_PC_CONF)
    before = tree(repo, tinc)
    for dry in ([], ["--dry-run"]):
        code, out, err = add(repo, "newbie", "--net", "inet6", "--tinc-dir", str(tinc), *dry)
        assert code == 1, (dry, out, err)
        first, hint = err.splitlines()
        assert first == (
            f"syncd add-node: {tinc} is already set up (its tinc.conf says Name = my_pc): it has tinc.conf; "
            "add-node replaces nothing there without --force"
        )
        assert hint == "  hint: to set up newbie elsewhere, give another --tinc-dir DIR (or --net); --force replaces it"
        assert tree(repo, tinc) == before
    # --force --dry-run names what it would replace, and writes nothing
    code, out, err = add(repo, "newbie", "--net", "inet6", "--tinc-dir", str(tinc), "--dry-run", "--force")
    assert code == 0, err
    assert f"note: --force: would replace {tinc / 'tinc.conf'}\n" in err
    assert tree(repo, tinc) == before
    code, out, err = add(repo, "newbie", "--net", "inet6", "--tinc-dir", str(tinc), "--force")
    assert code == 0, err
    assert f"note: --force: replacing {tinc / 'tinc.conf'}\n" in err
    assert (tinc / "tinc.conf").read_text().startswith("Name = newbie\n")


@pytest.mark.parametrize("name", ["tinc-up", "tinc-down", "hosts/newbie", "rsa_key.priv", "ed25519_key.priv"])
def test_every_file_of_a_node_is_kept_without_force(repo: Path, tmp_path: Path, name: str) -> None:
    tinc = tmp_path / "tinc"
    (tinc / name).parent.mkdir(parents=True)
    (tinc / name).write_text("someone's\n")
    before = tree(repo, tinc)
    code, _, err = add(repo, "newbie", "--net", "inet6", "--tinc-dir", str(tinc))
    assert code == 1 and f"{tinc} is already set up: it has {name}; " in err
    assert tree(repo, tinc) == before


def test_several_existing_files_are_all_named(repo: Path, tmp_path: Path) -> None:
    tinc = tmp_path / "tinc"
    (tinc / "hosts").mkdir(parents=True)
    for name in ("tinc.conf", "tinc-up", "rsa_key.priv", "hosts/newbie"):
        (tinc / name).write_text("x\n")
    code, _, err = add(repo, "newbie", "--net", "inet6", "--tinc-dir", str(tinc), "--dry-run")
    assert code == 1 and "it has tinc.conf, hosts/newbie, tinc-up, rsa_key.priv;" in err


def test_a_directory_in_the_way_is_refused_even_with_force(repo: Path, tmp_path: Path) -> None:
    tinc = tmp_path / "tinc"
    (tinc / "tinc-up").mkdir(parents=True)
    code, _, err = add(repo, "newbie", "--net", "inet6", "--tinc-dir", str(tinc), "--force")
    assert code == 2 and f"{tinc / 'tinc-up'} is a directory" in err
    assert not (repo / "hosts" / "newbie").exists() and [p.name for p in tinc.iterdir()] == ["tinc-up"]


def test_a_failed_write_leaves_every_file_as_it_was(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--force over a node, and the disk fills up while writing the last
    file: nothing is replaced, no temporary file or new directory stays."""
    tinc = tmp_path / "tinc"
    tinc.mkdir()
    (tinc / "tinc.conf").write_text(MY_PC_CONF)
    (tinc / "rsa_key.priv").write_text("my_pc's key\n")
    before = tree(repo, tinc)
    real_fsync, calls = os.fsync, []

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 6:  # tinc.conf, hosts/newbie, tinc-up, tinc-down, rsa_key.priv, then the repository's copy
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    code, _, err = add(repo, "newbie", "--net", "inet6", "--tinc-dir", str(tinc), "--force")
    assert code == 3 and "No space left on device" in err
    assert len(calls) == 6
    assert tree(repo, tinc) == before  # no hosts/ directory made, no .syncd-add-node-* file left


def test_the_network_name_is_never_guessed_from_a_folder(repo: Path, tmp_path: Path) -> None:
    tinc = tmp_path / "x" / "hub"
    code, _, err = add(repo, "newbie", "--tinc-dir", str(tinc))
    assert code == 2 and not tinc.exists()
    assert err == (
        f"syncd add-node: --tinc-dir {tinc} is not under /etc/tinc/, so its name need not be the network's: "
        "give --net NET too (the name in /etc/syncd/NET.yaml and tinc@NET)\n"
    )
    # under /etc/tinc the directory is the network (tincd's own layout)
    assert tinc_dir_of(None, "/etc/tinc/hub") == (Path("/etc/tinc/hub"), "hub")
    assert tinc_dir_of("inet6", None) == (Path("/etc/tinc/inet6"), "inet6")
    assert tinc_dir_of("inet6", str(tinc)) == (tinc, "inet6")
    with pytest.raises(UsageError, match="not a valid tinc network name"):
        tinc_dir_of("in/et", None)


def test_next_steps_use_the_given_network(repo: Path, tmp_path: Path) -> None:
    code, out, err = add(repo, "newbie", "--tinc-dir", str(tmp_path / "x" / "hub"), "--net", "inet6")
    assert code == 0, err
    assert "/etc/syncd/inet6.yaml" in out and "tinc@inet6" in out
    assert "hub.yaml" not in out and "tinc@hub" not in out and "net: hub" not in out


def test_the_admins_signing_step_works_as_pasted_in_a_fresh_clone(tmp_path: Path, home: Path) -> None:
    """join: admins.  The newcomer commits hosts/newbie unsigned in its clone;
    the admin, in a fresh clone with no signing configured at all (git's
    global config is empty), pulls it and pastes the printed command."""
    admin = make_key(home / ".ssh", "id_ed25519")  # where ssh-keygen puts it by default
    signers = allowed_signers(tmp_path / "allowed_signers", (admin, ""))
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers)
    assert node.sync()[0] == 0
    newcomer_clone = tmp_path / "newcomer"
    git(tmp_path, "clone", "-q", str(hub.server), str(newcomer_clone))
    owner = make_key(tmp_path / "newcomer-keys", "id_ed25519")
    code, out, err = add(newcomer_clone, "newbie", "--net", "inet6", "--tinc-dir", str(tmp_path / "tinc"),
                         "--owner-key", str(owner.public))  # fmt: skip
    assert code == 0, err
    printed = re.search(
        r"^ +(git -c gpg\.format=ssh -c user\.signingkey=\S+ commit --amend .* && git push)$", out, re.M
    )
    assert printed is not None, out
    git(newcomer_clone, "add", "hosts/newbie")
    git(newcomer_clone, "commit", "-q", "--no-gpg-sign", "-m", "Add newbie")
    admin_clone = tmp_path / "admin"
    git(tmp_path, "clone", "-q", str(hub.server), str(admin_clone))
    git(admin_clone, "pull", "-q", "--ff-only", str(newcomer_clone), "main")
    pasted = subprocess.run(
        printed[1], shell=True, cwd=admin_clone, env=env(HOME=str(home)), capture_output=True, text=True, check=False
    )
    assert pasted.returncode == 0, pasted.stderr
    code, _, err = node.sync()
    assert code == 0, err
    assert node.files()["newbie"] == (newcomer_clone / "hosts" / "newbie").read_bytes()


@pytest.mark.parametrize("join", ["admins", "members"])
def test_every_printed_signing_step_names_a_key(repo: Path, tmp_path: Path, join: str) -> None:
    (repo / "syncd.yaml").write_text((repo / "syncd.yaml").read_text() + f"join: {join}\n")
    owner = make_key(tmp_path / "keys", "id_ed25519")
    for owners in (["--owner-key", str(owner.public)], ["--no-owner-key"]):
        tinc = tmp_path / f"tinc{len(owners)}"
        code, out, err = add(repo, "newbie", "--net", "inet6", "--tinc-dir", str(tinc), *owners)
        assert code == 0, err
        steps = [line for line in out.splitlines() if "git -c gpg.format=ssh" in line]
        assert steps and all('-c user.signingkey="$HOME/.ssh/id_ed25519" commit' in s for s in steps), out
        (repo / "hosts" / "newbie").unlink()
