"""A forge's push webhook into one agent (``notify.webhook``): GitHub's
and Gitea's / Forgejo's ``push`` event (JSON, or GitHub's form encoding).

The webhook is a notification like any other: it names the branch's new
commit, and the agent runs a pass that fetches and verifies as always.
With ``notify.webhook_secret_file``, a request must carry
``X-Hub-Signature-256: sha256=HMAC-SHA256(secret, body)`` (what GitHub and
Gitea send): a forged request is refused with 403 before its body is read
as JSON — though nothing depends on the secret.  One request at a time,
the whole of it within ``READ_TIMEOUT`` (a client that sends a byte now and
then is cut off, not waited for) and at most ``MAX_BODY`` bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import socket
import threading
import urllib.parse
from pathlib import Path

from syncd.sync.gossip import Notice, is_commit
from syncd.sync.listener import OnNotice

MAX_BODY = 1 << 20  # bytes: a push event with many commits stays far below
READ_TIMEOUT = 5.0  # seconds for one request


class Webhook:
    """The endpoint, served from a daemon thread."""

    def __init__(
        self, address: tuple[str, int], net: str, branch: str, on_notice: OnNotice, secret: bytes | None = None
    ) -> None:
        self.net, self.branch, self.on_notice, self.secret = net, branch, on_notice, secret
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = READ_TIMEOUT
            server_version = "syncd"

            def log_message(self, format: str, *args: object) -> None:
                return  # a flood must not fill the logs; the agent logs each notified pass

            def setup(self) -> None:
                super().setup()  # the socket's timeout bounds each read; this, the whole request
                self.deadline = threading.Timer(READ_TIMEOUT, self.cut)
                self.deadline.daemon = True
                self.deadline.start()

            def cut(self) -> None:
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def finish(self) -> None:
                self.deadline.cancel()
                with contextlib.suppress(OSError):  # a client gone before the answer
                    super().finish()

            def do_POST(self) -> None:
                code, text = hook.handle(self)
                body = (text + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = (_Server6 if ":" in address[0] else _Server)(address, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="syncd-webhook", daemon=True)

    @property
    def bound(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s} port {port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=READ_TIMEOUT + 1)

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> tuple[int, str]:
        """One request → (status, a line saying why)."""
        try:
            length = int(request.headers.get("Content-Length", ""))
        except ValueError:
            return 411, "a Content-Length is required"
        if not 0 <= length <= MAX_BODY:
            return 413, f"the body is over {MAX_BODY} bytes"
        try:
            body = request.rfile.read(length)
        except OSError:
            return 408, "the body did not arrive in time"
        if self.secret is not None:
            given = request.headers.get("X-Hub-Signature-256", "")
            wanted = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(given.encode(), wanted.encode()):
                return 403, "X-Hub-Signature-256 is missing or wrong"
        event = request.headers.get("X-GitHub-Event") or request.headers.get("X-Gitea-Event") or "push"
        if event == "ping":
            return 200, "pong"
        if event != "push":
            return 202, f"ignored: a {event!r} event"
        return self._push(body, request.headers.get("Content-Type", ""), request.client_address[0])

    def _push(self, body: bytes, content_type: str, client: str) -> tuple[int, str]:
        try:
            if content_type.startswith("application/x-www-form-urlencoded"):
                body = urllib.parse.parse_qs(body.decode("utf-8"))["payload"][0].encode()
            event = json.loads(body)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError, RecursionError):
            return 400, "not a push event: the body is not JSON (or a form with a payload)"
        if not isinstance(event, dict) or not isinstance(event.get("ref"), str):
            return 400, "not a push event: no ref"
        if event["ref"] != f"refs/heads/{self.branch}":
            return 202, f"ignored: {event['ref']} is not refs/heads/{self.branch}"
        after = event.get("after")
        if not isinstance(after, str) or not is_commit(after.lower()) or not after.strip("0"):
            return 202, "ignored: no new commit (a deleted branch?)"
        self.on_notice(Notice(self.net, after.lower(), "webhook"), str(client))
        return 202, f"notified: {after.lower()[:12]}"


class _Server(http.server.HTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client that hangs up early is no error of the agent's, and must not fill the logs


class _Server6(_Server):
    address_family = socket.AF_INET6


def read_secret(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes().strip()
