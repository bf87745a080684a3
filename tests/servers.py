"""Real git servers on loopback for transport tests: `git daemon`, `git
http-backend` behind a small CGI web server, and OpenSSH's `sshd`.

Each is a context manager that starts the server on a free 127.0.0.1 port,
waits (bounded) until it accepts connections, and on exit stops what it
started by pid.
"""

from __future__ import annotations

import contextlib
import getpass
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import lacking


def require(program: str) -> str:
    """The program's path; a missing program fails the test in CI."""
    path = shutil.which(program) or (program if Path(program).is_file() else None)
    if path is None:
        message = f"{program} is not installed"
        lacking(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """Serves every repository under ``base``; yields ``git://127.0.0.1:PORT``."""
    require("git")
    port = free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"git://127.0.0.1:{port}"
    finally:
        _stop(proc)


class _CGIHandler(http.server.BaseHTTPRequestHandler):
    """Runs `git http-backend` as a CGI program for each request."""

    project_root: Path
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._cgi(b"")

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._cgi(body)

    def _cgi(self, body: bytes) -> None:
        path, _, query = self.path.partition("?")
        self.requests.append(f"{self.command} {path}")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        for header in ("Content-Encoding", "Git-Protocol"):
            if header in self.headers:
                env["HTTP_" + header.upper().replace("-", "_")] = self.headers[header]
        result = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1: (certificate, private key) PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@contextlib.contextmanager
def git_http(base: Path, tls: tuple[Path, Path] | None = None) -> Iterator[tuple[str, list[str]]]:
    """Smart HTTP for every repository under ``base`` (HTTPS with ``tls`` =
    (certificate, key)); yields the base URL and the requests the server saw."""
    require("git")
    requests: list[str] = []
    handler = type("Handler", (_CGIHandler,), {"project_root": base, "requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    scheme = "http"
    if tls is not None:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def ssh_server(workdir: Path, client_public_key: Path) -> Iterator[tuple[int, str]]:
    """An sshd on loopback with a throwaway host key that accepts
    ``client_public_key`` for the current user.  Yields ``(port,
    known_hosts line)``."""
    sshd = require("/usr/sbin/sshd")
    if os.geteuid() != 0:  # sshd needs its privilege separation directory and to switch users
        lacking("the ssh:// transport test needs root (sshd)")
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    authorized = workdir / "authorized_keys"
    authorized.write_text(client_public_key.read_text())
    authorized.chmod(0o600)
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {workdir / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"SetEnv PATH={os.environ.get('PATH', '/usr/bin:/bin')}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        kind, blob = (host_key.with_suffix(".pub")).read_text().split()[:2]
        yield port, f"[127.0.0.1]:{port} {kind} {blob}"
    finally:
        _stop(proc)


@dataclass(frozen=True)
class PinnedSsh:
    """An ssh:// URL of a repository on ``ssh_server``, and ssh commands for
    it: ``command`` pins the server's host key; ``impostor`` pins another
    key, so ssh refuses the server."""

    url: str
    command: str
    impostor: str


@contextlib.contextmanager
def pinned_ssh(workdir: Path, repository: Path) -> Iterator[PinnedSsh]:
    """``ssh_server`` with a fresh client key, and the commands that reach
    ``repository`` on it (``PinnedSsh``)."""
    from tests.gitutil import make_key

    client = make_key(workdir / "client", "deploy")
    with ssh_server(workdir / "sshd", client.public) as (port, known_line):
        known, other = workdir / "known_hosts", workdir / "other_known_hosts"
        known.write_text(known_line + "\n")
        other.write_text(f"[127.0.0.1]:{port} {make_key(workdir / 'other', 'impostor').public_line()}\n")
        ssh = f"ssh -i {client.private} -o StrictHostKeyChecking=yes -o BatchMode=yes -o UserKnownHostsFile="
        url = f"ssh://{getpass.getuser()}@127.0.0.1:{port}{repository}"
        yield PinnedSsh(url, f"{ssh}{known}", f"{ssh}{other}")


@dataclass(frozen=True)
class StaticServer:
    """A static web server (nginx) serving files as they are: a dumb-HTTP git mirror."""

    url: str
    log: Path

    def requests(self) -> list[tuple[str, int, int]]:
        """(path, status, bytes sent with headers) of every request so far, in order."""
        if not self.log.exists():
            return []
        rows = [line.split() for line in self.log.read_text().splitlines()]
        return [(path, int(status), int(sent)) for path, status, sent in rows]

    def sent(self) -> int:
        return sum(sent for _, _, sent in self.requests())

    def clear(self) -> None:
        self.log.write_text("")


@contextlib.contextmanager
def static_http(root: Path, work: Path) -> Iterator[StaticServer]:
    """nginx serving the files under ``root`` on 127.0.0.1, nothing else:
    no git on the server side.  Yields its URL and access log."""
    nginx = require("/usr/sbin/nginx")
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "access.log"
    user = "user root root;\n" if os.geteuid() == 0 else ""  # the workers read the test's private files
    temps = "".join(
        f"    {kind}_temp_path {work / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = work / "nginx.conf"
    config.write_text(
        f"daemon off;\nmaster_process on;\nworker_processes 1;\n{user}pid {work / 'nginx.pid'};\n"
        f"error_log {work / 'error.log'} warn;\nevents {{ worker_connections 64; }}\n"
        "http {\n    log_format plain '$uri $status $bytes_sent';\n"
        f"    access_log {log} plain;\n{temps}"
        f"    server {{\n        listen 127.0.0.1:{port};\n        root {root};\n    }}\n}}\n"
    )
    argv = [nginx, "-p", str(work), "-e", str(work / "error.log"), "-c", str(config)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield StaticServer(f"http://127.0.0.1:{port}", log)
    finally:
        _stop(proc)
