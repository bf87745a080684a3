"""How a failed pass ends, end to end: the exit code and the one message
(with its hint), what ``health.json`` records, what ``sync --log`` and
``run`` log, and whether ``run`` retries soon.  Real repositories, real
processes, real signals, real file permissions."""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.cli.main import main
from syncd.errors import FatalIOError
from syncd.node import state
from syncd.node.config import load_config
from syncd.node.privkeys import private_key_publics
from syncd.node.state import HEALTH_FILE, LOCK_FILE, Health, locked
from syncd.sync import agent
from syncd.sync.runloop import JITTER, RunLoop
from tests.keyfactory import rsa_private
from tests.servers import free_port, require
from tests.syncenv import Hub, Node, admin_and_signers, make_node


def health(node: Node) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((node.state / HEALTH_FILE).read_text())
    return data


class Log:
    """Records (level, event, fields) as a structlog logger is called."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, object]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda event, **fields: self.records.append((level, event, fields))


def logged_sync(node: Node) -> tuple[int, list[dict[str, Any]]]:
    err = io.StringIO()  # not a terminal: one JSON object a line, after the journald priority
    code = main(["sync", "--log", "-c", str(node.config)], io.StringIO(), err)
    return code, [json.loads(line[3:]) for line in err.getvalue().splitlines()]


# --- the node's own private key ----------------------------------------------------------

CORRUPT_KEYS = {
    "rsa_key.priv": b"-----BEGIN RSA PRIVATE KEY-----\nnot base64 at all\n-----END RSA PRIVATE KEY-----\n",
    "ed25519_key.priv": b"-----BEGIN ED25519 PRIVATE KEY-----\nAAAA\n-----END ED25519 PRIVATE KEY-----\n",
}


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("rsa_key.priv", CORRUPT_KEYS["rsa_key.priv"], "not a readable PEM RSA private key"),
        ("rsa_key.priv", b"", "not a readable PEM RSA private key"),
        ("ed25519_key.priv", CORRUPT_KEYS["ed25519_key.priv"], "3 bytes, tinc's Ed25519 private key has 96"),
        ("ed25519_key.priv", b"no block here\n", "no ED25519 PRIVATE KEY block"),
        ("ed25519_key.priv", b"\xff\xfe binary", "not ASCII text (byte 1)"),
        ("ed25519_key.priv", b"-----BEGIN ED25519 PRIVATE KEY-----\n#!\n-----END ED25519 PRIVATE KEY-----\n", "'#'"),
    ],
)
def test_a_corrupt_private_key_is_a_fatal_io_error_naming_it(name: str, data: bytes, says: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(FatalIOError) as caught:
        private_key_publics(tmp_path)
    assert caught.value.message.startswith(f"{tmp_path / name}: this node's private key is corrupt: ")
    assert says in caught.value.message
    assert caught.value.hint == f"fix or replace {tmp_path / name} (tincd's key; syncd never writes it)"


def test_an_absent_key_is_skipped_and_a_directory_in_its_place_is_not(tmp_path: Path) -> None:
    assert private_key_publics(tmp_path) == []
    (tmp_path / "rsa_key.priv").mkdir()
    with pytest.raises(FatalIOError, match=r"rsa_key\.priv: cannot read this node's private key: Is a directory"):
        private_key_publics(tmp_path)


@pytest.mark.parametrize("name", sorted(CORRUPT_KEYS))
def test_sync_with_a_corrupt_node_key_exits_2_and_records_it(node: Node, name: str) -> None:
    key = node.hosts.parent / name
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_bytes(CORRUPT_KEYS[name])
    code, out, err = node.sync()
    assert code == 2, err
    assert out == "" and node.files() == {}
    first, hint = err.splitlines()
    assert first.startswith(f"syncd sync: {key}: this node's private key is corrupt: ")
    assert hint == f"  hint: fix or replace {key} (tincd's key; syncd never writes it)"
    recorded = health(node)
    assert recorded["last_error_reason"] == "io-error" and recorded["last_outcome"] == "io-error"
    assert recorded["last_error"] == first.removeprefix("syncd sync: ")
    assert recorded["failures"] == 1


def test_run_waits_the_interval_after_a_corrupt_node_key(node: Node) -> None:
    key = node.hosts.parent / "rsa_key.priv"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_bytes(CORRUPT_KEYS["rsa_key.priv"])
    config = load_config(node.config)
    log = Log()
    loop = RunLoop(config, log)
    delays = [loop._pass(fetch=True) for _ in range(3)]
    low, high = config.interval * (1 - JITTER), config.interval * (1 + JITTER)
    assert all(low <= d <= high for d in delays), delays  # not 5, 10, 20 s: retrying cannot fix it
    assert [(level, event, fields["reason"]) for level, event, fields in log.records] == [
        ("error", "sync.failed", "io-error")
    ] * 3
    assert health(node)["failures"] == 3


def test_a_good_node_key_still_passes(node: Node, hub: Hub) -> None:
    from cryptography.hazmat.primitives import serialization

    private = rsa_private(2048, 21)
    key = node.hosts.parent / "rsa_key.priv"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    code, _, err = node.sync()  # my_pc's host file carries another key: held back, the rest applied
    assert code == 0 and "would cut my_pc off" in err
    assert "my_pc" not in node.files() and "gateway" in node.files()


# --- permissions ------------------------------------------------------------------------------


def test_no_permission_on_the_hosts_directory_exits_2_naming_it(node: Node) -> None:
    """As syncd@.service runs it: root without CAP_DAC_OVERRIDE, so the
    owner's mode bits of a root-owned directory decide."""
    setpriv = require("setpriv")
    node.hosts.mkdir(parents=True)
    node.hosts.chmod(0o555)
    caps = "-dac_override,-dac_read_search"
    sync = ["sync", "-c", str(node.config)]
    proc = subprocess.run(
        [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", sys.executable, "-m", "syncd", *sync],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    node.hosts.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    first, hint = proc.stderr.splitlines()
    assert first.startswith(f"syncd sync: {node.hosts}/"), first
    assert first.endswith(": permission denied to user root (uid 0)"), first
    assert "[Errno" not in proc.stderr
    assert hint.startswith(
        f"  hint: give user root (uid 0), who runs syncd, read and write permission on {node.hosts} ("
    )
    assert health(node)["last_error_reason"] == "io-error"
    assert node.files() == {}


# --- Ctrl-C -----------------------------------------------------------------------------------


def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """A sync stuck on a server that accepts and never answers, interrupted."""
    _admin, signers = admin_and_signers(tmp_path / "keys")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(30)
        node = make_node(tmp_path / "node", f"git://127.0.0.1:{server.getsockname()[1]}/x", signers)
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "sync", "-c", str(node.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # a shell's background job inherits SIGINT ignored, and Python
            # then installs no KeyboardInterrupt handler: start as a terminal would
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            conn, _ = server.accept()  # syncd is in its fetch now, waiting for an answer
            with conn:
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    assert (proc.returncode, out, err) == (130, "", "syncd sync: interrupted\n")


@pytest.mark.parametrize("command", ["check", "status", "sync", "run", "add-node"])
def test_every_command_maps_ctrl_c_to_130(command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import syncd.cli.main

    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(syncd.cli.main, f"cmd_{command.replace('-', '_')}", interrupted)
    args = {"check": [], "status": ["-c", "x"], "sync": ["-c", "x"], "run": ["-c", "x"], "add-node": ["n"]}[command]
    err = io.StringIO()
    try:
        code = main([command, *args], io.StringIO(), err)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main()")
    assert code == 130
    assert err.getvalue() == f"syncd {command}: interrupted\n"


# --- health.json and the lock -----------------------------------------------------------------


def test_a_pass_that_cannot_take_the_lock_writes_no_health(
    node: Node, hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert node.sync()[0] == 0
    before = (node.state / HEALTH_FILE).read_bytes()
    monkeypatch.setattr(agent, "LOCK_TIMEOUT", 0.2)
    with locked(node.state, 1):
        code, _, err = node.sync()
    assert code == 3 and "another syncd holds" in err
    assert (node.state / HEALTH_FILE).read_bytes() == before
    shutil.rmtree(hub.root / "srv")  # the next pass takes the lock, fails, and records it
    code, _, err = node.sync()
    assert code == 2 and health(node)["failures"] == 1  # the repository path names nothing now


def test_health_is_written_while_the_lock_is_held(node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[bool] = []
    real_save = state.save_health

    def probing_save(state_dir: Path, value: Health) -> None:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        real_save(state_dir, value)

    monkeypatch.setattr(agent, "save_health", probing_save)
    assert node.sync()[0] == 0
    (tmp_path / "keys" / "allowed_signers").write_text("")
    assert node.sync()[0] == 2  # a config error: recorded too, under the lock
    assert health(node)["last_error_reason"] == "config"
    assert held == [True, True]


# --- sync --log and run say the same ------------------------------------------------------------


@pytest.mark.parametrize("failure", ["corrupt-key", "store-is-a-file", "unreachable", "internal"])
def test_sync_log_and_run_log_the_same_event_and_reason(
    failure: str, node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if failure == "corrupt-key":
        node.hosts.parent.mkdir(parents=True, exist_ok=True)
        (node.hosts.parent / "rsa_key.priv").write_bytes(CORRUPT_KEYS["rsa_key.priv"])
    elif failure == "store-is-a-file":
        node.state.mkdir()
        (node.state / "repo.git").write_text("a file where the store's directory goes\n")
    elif failure == "unreachable":  # nothing listens on the port
        url = f"git://127.0.0.1:{free_port()}/hosts.git"
        node.config.write_text(node.config.read_text().replace(str(tmp_path / "hub" / "srv" / "hosts.git"), url))
    else:

        def broken(*args: object, **kwargs: object) -> None:
            raise ValueError("surprise")

        monkeypatch.setattr(agent, "_sync", broken)
    code, events = logged_sync(node)
    log = Log()
    RunLoop(load_config(node.config), log)._pass(fetch=True)
    [(level, event, fields)] = log.records
    assert [(e["level"], e["event"], e["reason"], e["error"], e.get("hint")) for e in events] == [
        (level, event, fields["reason"], fields["error"], fields.get("hint"))
    ]
    expected = {
        "corrupt-key": (2, "io-error", "error"),
        "store-is-a-file": (3, "io-error", "error"),
        "unreachable": (3, "fetch-failed", "error"),
        "internal": (3, "internal-error", "critical"),
    }[failure]
    assert (code, fields["reason"], level) == expected
    assert health(node)["failures"] == 2  # both passes recorded


def test_an_internal_error_is_a_message_and_a_hint_and_a_traceback_only_on_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import syncd.cli.main

    def broken(*args: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(syncd.cli.main, "run_check", broken)
    monkeypatch.delenv("SYNCD_DEBUG", raising=False)
    expected = [
        "syncd check: internal error: KeyError: 'surprise'",
        "  hint: this is a bug in syncd: please report it with this message "
        "(`SYNCD_DEBUG=1 syncd sync` shows the traceback)",
    ]
    err = io.StringIO()
    assert main(["check"], io.StringIO(), err) == 3
    assert err.getvalue().splitlines() == expected
    monkeypatch.setenv("SYNCD_DEBUG", "1")
    err = io.StringIO()
    assert main(["check"], io.StringIO(), err) == 3
    lines = err.getvalue().splitlines()
    assert lines[0] == "Traceback (most recent call last):" and lines[-2:] == expected
    assert "KeyError: 'surprise'" in lines[-3]
