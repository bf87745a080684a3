"""Fetching over every transport syncd supports, against real servers on
loopback: a plain path, file://, git:// (git daemon), http:// (git
http-backend) and ssh:// (OpenSSH sshd, host key checked)."""

from __future__ import annotations

from pathlib import Path

from tests.servers import git_daemon, git_http, pinned_ssh, self_signed_certificate
from tests.syncenv import Hub, Node, make_node


def sync_twice(hub: Hub, node: Node) -> None:
    """First sync, then a signed change, then an incremental fetch."""
    code, out, err = node.sync()
    assert code == 0, err
    assert "3 added" in out
    hub.change("annotate", lambda w: (w / "hosts" / "gateway").open("a").write("# on call: alice\n"))
    code, out, err = node.sync()
    assert code == 0, err
    assert "1 new commit " in out and "1 updated" in out
    assert (node.hosts / "gateway").read_text().endswith("# on call: alice\n")


def test_plain_path(hub: Hub, tmp_path: Path) -> None:
    sync_twice(hub, make_node(tmp_path / "n", str(hub.server), tmp_path / "keys" / "allowed_signers"))


def test_file_url(hub: Hub, tmp_path: Path) -> None:
    sync_twice(hub, make_node(tmp_path / "n", f"file://{hub.server}", tmp_path / "keys" / "allowed_signers"))


def test_git_daemon(hub: Hub, tmp_path: Path) -> None:
    with git_daemon(hub.server.parent) as base:
        sync_twice(hub, make_node(tmp_path / "n", f"{base}/hosts.git", tmp_path / "keys" / "allowed_signers"))


def test_smart_http(hub: Hub, tmp_path: Path) -> None:
    with git_http(hub.server.parent) as (base, requests):
        sync_twice(hub, make_node(tmp_path / "n", f"{base}/hosts.git", tmp_path / "keys" / "allowed_signers"))
    assert any("git-upload-pack" in r for r in requests), requests  # smart protocol, not dumb HTTP


def test_https_with_a_private_ca(hub: Hub, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path / "tls")
    signers = tmp_path / "keys" / "allowed_signers"
    with git_http(hub.server.parent, tls=(cert, key)) as (base, requests):
        assert base.startswith("https://")
        # without the server's CA the certificate is not trusted: nothing is installed
        untrusting = make_node(tmp_path / "n0", f"{base}/hosts.git", signers)
        code, _, err = untrusting.sync()
        assert code == 3 and "CERTIFICATE_VERIFY_FAILED" in err.upper().replace(" ", "_")
        assert untrusting.snapshot() == {}
        sync_twice(hub, make_node(tmp_path / "n", f"{base}/hosts.git", signers, repo__ca_file=str(cert)))
    assert any("git-upload-pack" in r for r in requests)


def test_ssh_with_known_hosts(hub: Hub, tmp_path: Path) -> None:
    with pinned_ssh(tmp_path, hub.server) as ssh:
        signers = tmp_path / "keys" / "allowed_signers"
        sync_twice(hub, make_node(tmp_path / "n", ssh.url, signers, repo__ssh_command=ssh.command))

        # The same server with a host key that is not the pinned one: refused.
        node = make_node(tmp_path / "n2", ssh.url, signers, repo__ssh_command=ssh.impostor)
        code, _, err = node.sync()
        assert code == 3, err
        assert node.snapshot() == {}
