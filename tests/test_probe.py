"""The refs probe (``syncd.git.probe``) and the unchanged pass it allows:
real servers on loopback (``git daemon``, smart HTTP(S) through
``git http-backend``, nginx serving a static mirror, a local repository),
the hostile git:// server (stall, drip, garbage, an oversized
advertisement, a tip it does not serve), and ``syncd sync`` in a child
process that must not load dulwich when nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from syncd.errors import FetchError, FetchTimeoutError, outcome
from syncd.git.pktline import pkt_line
from syncd.git.probe import advertised
from tests.gitutil import git
from tests.hostile import hostile_git, stalled_ssh_pids, stalling_http, stalling_ssh_command
from tests.servers import git_daemon, git_http, pinned_ssh, self_signed_certificate, static_http
from tests.syncenv import Hub, Node
from tests.test_faults import add_host, node_at

REPO = Path(__file__).resolve().parent.parent


def child_sync(node: Node) -> tuple[int, list[str], str]:
    """``syncd sync`` in a fresh process: its exit code, the dulwich
    modules it loaded, and its stderr."""
    code = (
        "import io, json, sys\n"
        "from syncd.cli.main import main\n"
        "err = io.StringIO()\n"
        f"code = main(['sync', '-c', {str(node.config)!r}], io.StringIO(), err)\n"
        "print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] == 'dulwich'), err.getvalue()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    result, modules, err = json.loads(done.stdout)
    return int(result), list(modules), str(err)


def urls_of(node: Node) -> list[dict[str, object]]:
    urls: list[dict[str, object]] = json.loads((node.state / "health.json").read_text())["urls"]
    return urls


# --- the probe against real servers -------------------------------------------------


def test_the_probe_reads_each_real_transport_as_the_fetch_does(hub: Hub, tmp_path: Path) -> None:
    git(hub.server, "update-server-info")
    cert, key = self_signed_certificate(tmp_path / "tls")
    with (
        git_daemon(hub.server.parent) as daemon,
        git_http(hub.server.parent) as (smart, requests),
        git_http(hub.server.parent, tls=(cert, key)) as (tls, _),
        static_http(hub.server.parent, tmp_path / "nginx") as static,
    ):
        urls = [
            f"{daemon}/hosts.git",
            f"{smart}/hosts.git",
            f"{tls}/hosts.git",
            f"{static.url}/hosts.git",
            str(hub.server),
            f"file://{hub.server}",
        ]
        assert advertised(urls, "main", 10, ca_file=cert) == [hub.tip] * len(urls)
        assert requests == ["GET /hosts.git/info/refs"], requests
        # without the private CA the TLS server is not trusted: a failure, not a tip
        (untrusted,) = advertised([f"{tls}/hosts.git"], "main", 10)
        assert isinstance(untrusted, FetchError) and "CERTIFICATE_VERIFY_FAILED" in untrusted.message
        # a branch the server does not have
        (missing,) = advertised([f"{daemon}/hosts.git"], "nope", 10)
        assert isinstance(missing, FetchError) and "no branch nope" in missing.message
        # a proxy in the environment is the fetch path's (dulwich honours it)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("https_proxy", "http://127.0.0.1:1")
            assert advertised([f"{smart}/hosts.git"], "main", 5) == [None]
    # a packed ref is read as git reads it; an scp-like URL and a symbolic ref are the fetch path's
    git(hub.server, "pack-refs", "--all")
    assert not (hub.server / "refs" / "heads" / "main").exists()
    assert advertised([str(hub.server)], "main", 5) == [hub.tip]
    git(hub.server, "symbolic-ref", "refs/heads/other", "refs/heads/main")
    assert advertised(["git@127.0.0.1:hosts.git", str(hub.server)], "other", 5) == [None, None]


def test_the_probe_runs_the_configured_ssh_command_as_the_fetch_does(hub: Hub, tmp_path: Path) -> None:
    with pinned_ssh(tmp_path, hub.server) as ssh:
        url = ssh.url
        assert advertised([url], "main", 20, ssh_command=ssh.command) == [hub.tip]
        # a host key that is not the pinned one: no tip (ssh refuses), and the fetch path says why
        (refused,) = advertised([url], "main", 20, ssh_command=ssh.impostor)
        assert isinstance(refused, FetchError) and "closed the connection" in refused.message, refused
        node = node_at(hub, tmp_path, url, repo__ssh_command=ssh.command)
        assert child_sync(node)[0] == 0
        code, modules, err = child_sync(node)
        assert (code, modules) == (0, []), err


def test_a_stalling_ssh_command_is_killed_at_the_deadline(tmp_path: Path) -> None:
    command = stalling_ssh_command(tmp_path / "stall")
    started = time.monotonic()
    (answer,) = advertised(["ssh://git@127.0.0.1/hosts.git"], "main", 1.5, ssh_command=command)
    assert isinstance(answer, FetchTimeoutError), answer
    assert time.monotonic() - started < 5
    (pid,) = stalled_ssh_pids(tmp_path / "stall")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed with its session, and reaped


def test_a_refused_connection_names_the_url_without_its_password(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        (answer,) = advertised([f"http://user:s3cret@127.0.0.1:{port}/hosts.git"], "main", 5)
        (plain,) = advertised([f"git://127.0.0.1:{port}/hosts.git"], "main", 5)
    for failure in (answer, plain):
        assert isinstance(failure, FetchError) and not isinstance(failure, FetchTimeoutError)
        assert "Connection refused" in failure.message, failure.message
        assert outcome(failure).exit_code == 3
    assert isinstance(answer, FetchError) and "s3cret" not in answer.message and "user:***@" in answer.message


# --- hostile servers ---------------------------------------------------------------


@pytest.mark.parametrize(("mode", "opts"), [("stall", {}), ("drip", {"interval": 0.5, "chunk": 1})])
def test_a_stalling_or_dripping_server_is_cut_off_at_the_deadline(hub: Hub, mode: str, opts: dict[str, object]) -> None:
    with hostile_git(hub.server, mode, **opts) as url:
        started = time.monotonic()
        (answer,) = advertised([url], "main", 2)
        took = time.monotonic() - started
    assert isinstance(answer, FetchTimeoutError), answer
    assert answer.message == f"{url}: no complete answer within 2 s (repo.timeout)"
    assert outcome(answer).exit_code == 3
    assert 1.9 <= took < 6, took  # the advertisement would take minutes at this pace


def test_a_stalling_http_server_is_cut_off_at_the_deadline() -> None:
    with stalling_http() as url:
        started = time.monotonic()
        (answer,) = advertised([str(url)], "main", 1.5)
        took = time.monotonic() - started
    assert isinstance(answer, FetchTimeoutError), answer
    assert took < 5, took


def test_cancel_stops_a_probe_in_flight(hub: Hub) -> None:
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    with hostile_git(hub.server, "stall") as url:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            advertised([url], "main", 30, cancel=stop.is_set)
    assert time.monotonic() - started < 5  # not the 30 s deadline


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"HTTP/1.0 418 I'm a teapot\r\n\r\n", "malformed pkt-line length"),
        (b"0003", "malformed pkt-line length"),
        (pkt_line(b"ERR access denied\n"), "the server says: access denied"),
        (pkt_line(b"not-a-sha refs/heads/main\0caps\n") + b"0000", "malformed ref advertisement line"),
        (pkt_line(b"a" * 40 + b" refs/heads/main\n") * 2 + b"0000", "names refs/heads/main twice"),
        (pkt_line(b"a" * 40 + b" refs/heads/main\n"), "closed the connection before the end"),
        (b"".join(pkt_line(b"a" * 40 + b" refs/tags/%06d" % i + b"x" * 60000) for i in range(80)), "over 4194304"),
    ],
)
def test_a_malformed_or_oversized_advertisement_is_a_clear_failure(hub: Hub, data: bytes, says: str) -> None:
    with hostile_git(hub.server, "garbage", data=data) as url:
        (answer,) = advertised([url], "main", 10)
    assert isinstance(answer, FetchError) and not isinstance(answer, FetchTimeoutError), answer
    assert says in answer.message and answer.message.startswith(url), answer.message


def test_a_server_advertising_a_tip_it_does_not_serve_costs_one_pass(hub: Hub, tmp_path: Path) -> None:
    """The probe believes no advertisement: a tip other than the applied
    one takes the fetch path, which fails without changing anything; the
    next honest pass converges."""
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    before = json.loads((node.state / "state.json").read_text())
    new = hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    with hostile_git(hub.server, "phantom", tip=new) as url:
        node.config.write_text(node.config.read_text().replace(str(hub.server), url))
        code, _, err = node.sync()
        assert code == 3 and new[:12] in err, err
        assert json.loads((node.state / "state.json").read_text()) == before
    node.config.write_text(node.config.read_text().replace(url, str(hub.server)))
    code, out, err = node.sync()
    assert code == 0 and "applied" in out, err
    assert (node.hosts / "alpha").exists()


# --- the unchanged pass ------------------------------------------------------------


def test_an_unchanged_pass_loads_no_dulwich_and_records_what_a_fetch_would(hub: Hub, tmp_path: Path) -> None:
    with git_daemon(hub.server.parent) as daemon:
        node = node_at(hub, tmp_path, f"{daemon}/hosts.git")
        code, modules, err = child_sync(node)
        assert code == 0 and modules, err  # a first sync fetches
        fetched = urls_of(node)
        code, modules, err = child_sync(node)
        assert (code, modules) == (0, []), err
        assert urls_of(node) == fetched and fetched[0]["state"] == "current"
        health = json.loads((node.state / "health.json").read_text())
        assert health["last_outcome"] == "unchanged" and health["last_pass_duration"] is not None
        # a managed file changed behind syncd's back: the pass needs more, and repairs it
        (node.hosts / "my_pc").write_text("tampered\n")
        code, modules, err = child_sync(node)
        assert code == 0 and modules, err
        assert (node.hosts / "my_pc").read_bytes() == hub.host("my_pc").read_bytes()
        # a new commit: fetched as ever
        hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
        code, modules, err = child_sync(node)
        assert code == 0 and modules and (node.hosts / "alpha").exists(), err
        assert child_sync(node)[:2] == (0, [])


def test_a_mirror_behind_is_settled_and_a_dead_one_fails_as_a_fetch_would(hub: Hub, tmp_path: Path) -> None:
    behind = tmp_path / "behind.git"
    git(tmp_path, "clone", "-q", "--bare", str(hub.server), str(behind))
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    node = node_at(hub, tmp_path, str(hub.server), repo__mirrors=[str(behind)])
    assert child_sync(node)[0] == 0
    assert child_sync(node)[0] == 0  # the mirror's tip is now settled against the applied commit
    settled = urls_of(node)
    assert [u["state"] for u in settled] == ["current", "behind"]
    code, modules, err = child_sync(node)
    assert (code, modules) == (0, []), err
    assert urls_of(node) == settled
    with hostile_git(hub.server, "stall") as url:
        config = yaml.safe_load(node.config.read_text())
        config["repo"].update(mirrors=[str(url)], timeout=1)
        node.config.write_text(yaml.safe_dump(config))
        assert child_sync(node)[0] == 0  # its fetched ref named the mirror's tip: the fetch path moves it
        code, modules, err = child_sync(node)
    assert (code, modules) == (0, []), err
    states = urls_of(node)
    assert states[0]["state"] == "current" and states[1]["state"] == "failing"
    assert states[1]["detail"] == f"{url}: no complete answer within 1 s (repo.timeout)"
