"""A forge's push webhook into one real agent (`notify.webhook`): GitHub's
and Gitea's push event, the shared secret, and what is not a push."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import socket
import struct
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from syncd.sync import webhook
from tests.servers import free_port
from tests.swarm import swarm

SECRET = b"a shared secret"


def post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def signed(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={digest}"}


def test_a_signed_push_webhook_starts_a_pass_and_anything_else_does_not(tmp_path: Path) -> None:
    port = free_port()
    secret = tmp_path / "webhook.secret"
    secret.write_bytes(SECRET + b"\n")
    extra = {0: f", webhook: '127.0.0.1:{port}', webhook_secret_file: '{secret}'"}
    with swarm(tmp_path / "swarm", 2, started=range(1), notify_extra=extra) as sw:
        first = sw.applied(0)
        sha = sw.push("a change", change=1)
        push = json.dumps({"ref": "refs/heads/main", "before": first, "after": sha, "commits": []}).encode()
        other = json.dumps({"ref": "refs/heads/other", "after": sha}).encode()
        assert post(port, push, signed(push, b"wrong")) == (403, "X-Hub-Signature-256 is missing or wrong\n")
        assert post(port, push, {"Content-Type": "application/json"})[0] == 403
        assert post(port, b"{}", signed(b"{}") | {"X-GitHub-Event": "ping"})[0] == 200
        assert post(port, other, signed(other))[1].startswith("ignored: refs/heads/other")
        assert post(port, b"[", signed(b"["))[0] == 400
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # refused before the body is read
            raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.0 413 ")
        time.sleep(1.5)
        assert sw.applied(0) == first  # none of those started a pass that applied anything
        assert not any(e["event"] == "notify.heard" for e in sw.events(0))
        # GitHub's form encoding, as a Gitea event
        form = urllib.parse.urlencode({"payload": push.decode()}).encode()
        headers = signed(form) | {"Content-Type": "application/x-www-form-urlencoded", "X-Gitea-Event": "push"}
        del headers["X-GitHub-Event"]
        assert post(port, form, headers) == (202, f"notified: {sha[:12]}\n")
        deadline = time.monotonic() + 10
        while sw.applied(0) != sha and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sw.applied(0) == sha
        heard = [e for e in sw.events(0) if e["event"] == "notify.heard"]
        assert [(e["by"], e["commit"]) for e in heard] == [("webhook", sha)]


def test_a_client_that_trickles_bytes_is_cut_off_at_the_request_deadline(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """One request at a time: a client sending a byte now and then (each
    read within the socket's timeout) must not hold the endpoint past
    ``READ_TIMEOUT``; nor does a client that hangs up print a traceback."""
    monkeypatch.setattr(webhook, "READ_TIMEOUT", 1.0)
    heard: list[str] = []
    hook = webhook.Webhook(("127.0.0.1", 0), "inet6", "main", lambda notice, _: heard.append(notice.commit))
    hook.start()
    port = int(hook.server.server_address[1])
    stop = threading.Event()

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"POST / HTTP/1.1\r\n")
            for _ in range(40):  # 8 s, a byte every 0.2 s
                if stop.wait(0.2):
                    return
                with contextlib.suppress(OSError):
                    slow.sendall(b"X")

    thread = threading.Thread(target=trickle)
    try:
        thread.start()
        time.sleep(0.2)
        started = time.monotonic()
        push = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
        assert post(port, push, {"Content-Type": "application/json"}) == (202, f"notified: {'a' * 12}\n")
        assert time.monotonic() - started < 3.0  # the trickler was cut off after 1 s, not after 8
        assert heard == ["a" * 40]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as gone:  # hangs up before the answer
            gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            gone.sendall(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        assert post(port, b"{}", {"X-GitHub-Event": "ping"}) == (200, "pong\n")
    finally:
        stop.set()
        thread.join()
        hook.stop()
    assert "Traceback" not in capfd.readouterr().err
