"""`syncd sync` end to end on real signed repositories (file transport).

Every refusal must leave the installed files byte-for-byte, inode and mtime
unchanged; every success must write only what changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.node.state import STATE_FILE
from syncd.rules.plan import blob_id
from tests.gitutil import allowed_signers, make_key
from tests.keyfactory import rsa_pem
from tests.syncenv import Hub, Node, make_node


def add_host(name: str, subnet: str, seed: int) -> Callable[[Path], None]:
    def edit(work: Path) -> None:
        (work / "hosts" / name).write_text(f"Subnet = {subnet}\n\n{rsa_pem(seed=seed)}")

    return edit


def state(node: Node) -> dict[str, object]:
    data: dict[str, object] = json.loads((node.state / STATE_FILE).read_text())
    return data


def test_first_sync_installs_the_signed_tree(hub: Hub, node: Node) -> None:
    code, out, err = node.sync()
    assert code == 0, err
    assert "first sync" in out and "3 added" in out
    assert node.files() == {n: (hub.work / "hosts" / n).read_bytes() for n in ("gateway", "my_laptop", "my_pc")}
    for _, mode, _, _ in node.snapshot().values():
        assert mode & 0o7777 == 0o644
    assert state(node)["last_applied"] == hub.tip
    assert state(node)["signer"] == "admin@example.org"


def test_second_sync_is_unchanged_and_touches_nothing(hub: Hub, node: Node) -> None:
    node.sync()
    before = node.snapshot()
    state_before = (node.state / STATE_FILE).read_bytes()
    code, out, _ = node.sync()
    assert (code, out.split(" at ")[0]) == (0, "already current")
    assert node.snapshot() == before
    assert (node.state / STATE_FILE).read_bytes() == state_before


def test_only_changed_files_are_written(hub: Hub, node: Node) -> None:
    node.sync()
    before = node.snapshot()
    hub.change("add newbie", add_host("newbie", "2002:102:304:7::/64", 11))
    code, out, _ = node.sync()
    assert code == 0 and "1 added, 0 updated, 0 removed" in out and "1 new commit " in out
    after = node.snapshot()
    assert set(after) == set(before) | {"newbie"}
    for name in before:
        assert after[name] == before[name], f"{name} was rewritten: inode and mtime must not change"


def test_update_and_removal(hub: Hub, node: Node) -> None:
    node.sync()
    before = node.snapshot()

    def edit(work: Path) -> None:
        (work / "hosts" / "my_laptop").unlink()
        with (work / "hosts" / "gateway").open("a") as fh:
            fh.write("# maintenance window: Sundays\n")

    hub.change("retire my_laptop, annotate gateway", edit)
    code, out, _ = node.sync()
    assert code == 0 and "0 added, 1 updated, 1 removed" in out
    after = node.snapshot()
    assert set(after) == {"gateway", "my_pc"}
    assert after["gateway"][0].endswith(b"Sundays\n")
    assert after["my_pc"] == before["my_pc"]


def test_unmanaged_files_are_left_alone_and_adopted_files_are_kept(hub: Hub, node: Node) -> None:
    node.hosts.mkdir(parents=True)
    (node.hosts / "local_only").write_text("Subnet = 10.9.9.9\n")
    shutil.copy(hub.host("my_pc"), node.hosts / "my_pc")  # identical: adopted, not rewritten
    (node.hosts / "my_pc-up").write_text("#!/bin/sh\n")
    adopted_ino = (node.hosts / "my_pc").stat().st_ino
    code, out, _ = node.sync()
    assert code == 0
    assert "? local_only" in out and "= my_pc (identical; adopted)" in out
    assert (node.hosts / "my_pc").stat().st_ino == adopted_ino
    assert (node.hosts / "local_only").read_text() == "Subnet = 10.9.9.9\n"
    assert (node.hosts / "my_pc-up").exists()
    hub.change("drop my_pc", lambda w: (w / "hosts" / "my_pc").unlink())
    node.sync()
    assert not (node.hosts / "my_pc").exists()  # adopted, so syncd owns it now
    assert (node.hosts / "local_only").exists()  # never syncd's


def test_drift_is_repaired_by_the_next_sync(hub: Hub, node: Node) -> None:
    node.sync()
    original = (node.hosts / "gateway").read_bytes()
    (node.hosts / "gateway").write_text("Subnet = ::/0\n")
    (node.hosts / "my_laptop").unlink()
    code, out, _ = node.sync()
    assert code == 0 and "re-applied" in out and "1 added, 1 updated" in out
    assert (node.hosts / "gateway").read_bytes() == original


def test_dry_run_prints_the_plan_and_changes_nothing(hub: Hub, node: Node) -> None:
    code, out, _ = node.sync("--dry-run")
    assert code == 0
    assert out.splitlines()[1:5] == ["  + gateway", "  + my_laptop", "  + my_pc", ""]  # then the diffs
    assert node.snapshot() == {}
    assert not (node.state / STATE_FILE).exists()


# --- refusals: nothing on disk may change --------------------------------------------


def refused(node: Node, *args: str) -> str:
    before = node.snapshot()
    state_before = (node.state / STATE_FILE).read_bytes()
    code, out, err = node.sync(*args)
    assert code == 1, (out, err)
    assert node.snapshot() == before, "a refused sync changed the installed files"
    assert (node.state / STATE_FILE).read_bytes() == state_before
    return err


def test_unsigned_commit_is_refused(hub: Hub, node: Node) -> None:
    node.sync()
    hub.change("sneaky", add_host("evil", "2002:102:304:9::/64", 12), key=None)
    assert "('sneaky'): not signed" in refused(node)


def test_unknown_signer_is_refused(hub: Hub, node: Node, tmp_path: Path) -> None:
    node.sync()
    stranger = make_key(tmp_path / "stranger", "stranger")
    hub.change("stranger's commit", add_host("evil", "2002:102:304:9::/64", 12), key=stranger)
    err = refused(node)
    assert "no role at the parent commit (not an admin, owns no node)" in err and "SHA256:" in err


def test_expired_signer_is_refused(hub: Hub, tmp_path: Path) -> None:
    admin = hub.admin
    signers = allowed_signers(tmp_path / "expiring", (admin, 'valid-before="20250101Z"'))
    node = make_node(tmp_path / "n2", str(hub.server), signers)
    hub.change("old but signed", lambda w: None, date="2024-06-01T00:00:00Z")
    code, _, err = node.sync()
    assert code == 0, err  # signed while the key was valid
    hub.change("signed after expiry", add_host("late", "2002:102:304:9::/64", 13))
    assert "is not valid at" in refused(node)


def test_signed_commit_on_top_of_an_unsigned_one(hub: Hub, node: Node) -> None:
    node.sync()
    hub.change("unsigned middle", add_host("evil", "2002:102:304:9::/64", 12), key=None, push=False)
    hub.change("signed top", lambda w: None)
    err = refused(node)
    assert "('unsigned middle'): not signed" in err


def test_verify_tip_accepts_an_unsigned_middle_commit(hub: Hub, tmp_path: Path) -> None:
    node = make_node(tmp_path / "tip", str(hub.server), tmp_path / "keys" / "allowed_signers", trust__verify="tip")
    node.sync()
    hub.change("unsigned middle", add_host("newbie", "2002:102:304:9::/64", 12), key=None, push=False)
    hub.change("signed top", lambda w: None)
    code, out, _ = node.sync()
    assert code == 0 and "2 new commits" in out


def test_rollback_to_an_older_signed_commit_is_refused(hub: Hub, node: Node) -> None:
    first = hub.tip
    hub.change("add newbie", add_host("newbie", "2002:102:304:7::/64", 11))
    node.sync()
    from tests.gitutil import git

    git(hub.work, "reset", "-q", "--hard", first)
    git(hub.work, "push", "-q", "--force", "origin", "HEAD:main")
    err = refused(node)
    assert "non-fast-forward" in err and "--allow-rewind" in err
    code, out, _ = node.sync("--allow-rewind")
    assert code == 0 and "1 removed" in out
    assert not (node.hosts / "newbie").exists()


@pytest.mark.parametrize(
    ("what", "edit", "expected"),
    [
        ("symlink", lambda w: (w / "hosts" / "evil").symlink_to("/etc/shadow"), "file-type"),
        ("script", lambda w: (w / "hosts" / "gateway-up").write_text("#!/bin/sh\nid\n"), "name-invalid"),
        (
            "overlap",
            lambda w: (w / "hosts" / "evil").write_text(f"Subnet = 2002:102:304:4::/62\n{rsa_pem(seed=14)}"),
            "subnet-overlap",
        ),
        (
            "subdirectory",
            lambda w: (w / "hosts" / "sub").mkdir() or (w / "hosts" / "sub" / "x").write_text("x"),
            "file-type",
        ),
        ("bad policy", lambda w: (w / "syncd.yaml").write_text("routes: {ghost: ['::/0']}\n"), "policy-invalid"),
    ],
)
def test_signed_but_invalid_trees_are_refused(
    hub: Hub, node: Node, what: str, edit: Callable[[Path], object], expected: str
) -> None:
    node.sync()
    hub.change(f"signed {what}", edit)
    err = refused(node)
    assert "invalid content" in err and expected in err


def test_too_many_entries_are_refused_before_reading(hub: Hub, node: Node) -> None:
    node.sync()

    def edit(work: Path) -> None:
        policy = (work / "syncd.yaml").read_text() + "max_files: 3\n"
        (work / "syncd.yaml").write_text(policy)
        (work / "hosts" / "extra").write_text(f"Subnet = 2002:102:304:8::/64\n{rsa_pem(seed=15)}")

    hub.change("four hosts, max_files 3", edit)
    assert "over the policy's max_files (3)" in refused(node)


def test_oversized_blob_is_refused(hub: Hub, node: Node) -> None:
    node.sync()
    big = "# padding\n" * 7000  # 70 kB, over the 64 KiB default
    hub.change("huge", lambda w: (w / "hosts" / "huge").write_text(big))
    assert "file-too-large" in refused(node)


def test_own_host_file_with_a_foreign_key_is_held_back(hub: Hub, node: Node) -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.keyfactory import rsa_private

    node.sync()
    # my_pc's real private key is the one in the node's tinc dir
    tinc_dir = node.hosts.parent
    private = rsa_private(2048, 21)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    (tinc_dir / "rsa_key.priv").write_bytes(pem)
    hub.change(
        "my_pc gets its real key",
        lambda w: (w / "hosts" / "my_pc").write_text(f"Subnet = 2002:102:304:4::/64\n{rsa_pem(2048, 21)}"),
    )
    code, _, err = node.sync()
    assert code == 0, err
    own = (node.hosts / "my_pc").stat()

    def swap(work: Path) -> None:
        (work / "hosts" / "my_pc").write_text(f"Subnet = 2002:102:304:4::/64\n{rsa_pem(2048, 22)}")
        (work / "hosts" / "gateway").write_text((work / "hosts" / "gateway").read_text() + "# note\n")

    hub.change("someone swaps my_pc's key", swap)
    code, out, err = node.sync()
    assert code == 0 and "1 updated" in out and "would cut my_pc off" in err, (out, err)
    assert (node.hosts / "gateway").read_bytes() == (hub.work / "hosts" / "gateway").read_bytes()
    assert (node.hosts / "my_pc").stat().st_mtime_ns == own.st_mtime_ns


# --- config, transport failures -------------------------------------------------------


def test_config_errors_exit_2_naming_the_key(hub: Hub, tmp_path: Path) -> None:
    signers = tmp_path / "keys" / "allowed_signers"
    cases = {
        "trust__verify": ("sometimes", "trust.verify"),
        "interval": ("soon", "interval"),
        "colour": ("blue", "colour: unknown key"),
        "trust__allowed_signers": (str(tmp_path / "missing"), "trust.allowed_signers"),
        "node": ("my-pc", "node"),
    }
    for key, (value, message) in cases.items():
        node = make_node(tmp_path / f"cfg-{key}", str(hub.server), signers, **{key: value})
        code, _, err = node.sync()
        assert code == 2, (key, err)
        assert message in err, (key, err)


def test_unreachable_repository_is_transient_and_mirrors_are_tried(hub: Hub, tmp_path: Path) -> None:
    signers = tmp_path / "keys" / "allowed_signers"
    secret = "https://deploy:s3cret-token@127.0.0.1:9/hosts.git"
    node = make_node(tmp_path / "m", secret, signers, repo__mirrors=[str(tmp_path / "nowhere")])
    code, _, err = node.sync()
    assert code == 3
    assert "s3cret" not in err and "deploy:***@127.0.0.1:9" in err
    node = make_node(tmp_path / "m2", secret, signers, repo__mirrors=[str(hub.server)])
    code, out, err = node.sync("--dry-run")
    assert code == 0, err
    assert out.startswith(f"plan for {hub.tip[:12]} signed by admin@example.org from {hub.server}:")
    assert node.sync()[0] == 0


def test_missing_branch_is_a_config_error(hub: Hub, tmp_path: Path) -> None:
    """Retrying cannot create the branch: exit 2, naming it, and what to check."""
    node = make_node(tmp_path / "b", str(hub.server), tmp_path / "keys" / "allowed_signers", repo__branch="nope")
    code, _, err = node.sync()
    assert code == 2 and "no branch refs/heads/nope" in err and "repo.branch" in err
    assert json.loads((node.state / "health.json").read_text())["last_error_reason"] == "config"


def test_concurrent_syncs_take_turns(hub: Hub, node: Node) -> None:
    import subprocess
    import sys

    node.sync()
    hub.change("add newbie", add_host("newbie", "2002:102:304:7::/64", 11))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "syncd", "sync", "-c", str(node.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), p.stdout.read() if p.stdout else "") for p in procs]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    outputs = sorted(out.split(" ")[0] for _, out in results)
    assert outputs == ["already", "already", "already", "applied"], results
    assert (node.hosts / "newbie").exists()
    assert state(node)["last_applied"] == hub.tip


@pytest.mark.parametrize(("kind", "bits"), [("ecdsa", 256), ("ecdsa", 521), ("rsa", 3072)])
def test_admins_with_ecdsa_and_rsa_keys(tmp_path: Path, kind: str, bits: int) -> None:
    admin = make_key(tmp_path / "keys", f"{kind}admin", kind, bits)
    signers = allowed_signers(tmp_path / "allowed", (admin, 'namespaces="git"'))
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers)
    code, out, err = node.sync()
    assert code == 0, err
    assert f"signed by {kind}admin@example.org" in out


def test_log_mode_emits_journald_json_events(hub: Hub, node: Node) -> None:
    import io

    from syncd.cli.main import main

    def logged() -> tuple[int, list[tuple[str, dict[str, object]]]]:
        out, err = io.StringIO(), io.StringIO()
        code = main(["sync", "--log", "-c", str(node.config)], out, err)
        assert out.getvalue() == ""
        events = [(line[:3], json.loads(line[3:])) for line in err.getvalue().splitlines()]
        return code, events

    code, events = logged()
    assert code == 0
    assert [(p, e["event"]) for p, e in events] == [("<6>", "sync.applied")]
    assert events[0][1]["added"] == 3 and events[0][1]["signer"] == "admin@example.org"
    unchanged = logged()[1]
    assert [e["event"] for _, e in unchanged] == ["sync.unchanged"]
    hub.change("unsigned", lambda w: None, key=None)
    code, refused = logged()
    assert code == 1
    assert [(p, e["event"], e["reason"]) for p, e in refused] == [("<3>", "sync.refused", "signature")]
    # every pass says how long it took, whatever its outcome
    for event in (events[0][1], unchanged[0][1], refused[0][1]):
        assert isinstance(event["duration_s"], float) and 0 < event["duration_s"] < 60, event


def test_a_state_of_the_sha256_manifest_is_upgraded_without_rewriting_a_file(hub: Hub, node: Node) -> None:
    """state.json version 1 named files by sha256: the next pass reads them
    once, finds them equal to the repository by blob id, and records them;
    no file is written (tincd would drop those peers), nothing is reported."""
    assert node.sync()[0] == 0
    path = node.state / STATE_FILE
    state = json.loads(path.read_text())
    state["version"] = 1
    for name, entry in state["manifest"].items():
        entry[0] = hashlib.sha256((node.hosts / name).read_bytes()).hexdigest()
    path.write_text(json.dumps(state))
    before = node.snapshot()
    code, out, _ = node.sync()
    assert code == 0 and out.startswith("already current"), out
    assert node.snapshot() == before
    upgraded = json.loads(path.read_text())
    assert upgraded["version"] == 2
    assert {n: e[0] for n, e in upgraded["manifest"].items()} == {
        n: blob_id((node.hosts / n).read_bytes()) for n in upgraded["manifest"]
    }
