"""A forge's push webhook into one real agent (`notify.webhook`): GitHub's
and Gitea's push event, the shared secret, and what is not a push."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import time
import urllib.parse
from pathlib import Path

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
