"""The node config: defaults, every kind of error naming its key, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.config import load_config, parse_config, parse_duration, parse_size, redact_url
from syncd.errors import ConfigError


@pytest.fixture
def signers(tmp_path: Path) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text("")
    return path


def minimal(signers: Path) -> dict[str, object]:
    return {"net": "inet6", "node": "my_pc", "repo": {"url": "git://h/x"}, "trust": {"allowed_signers": str(signers)}}


def test_defaults(signers: Path) -> None:
    config = parse_config(minimal(signers))
    assert config.tinc.dir == Path("/etc/tinc/inet6")
    assert config.tinc.hosts_dir == Path("/etc/tinc/inet6/hosts")
    assert config.tinc.pidfile == Path("/run/tinc.inet6.pid")
    assert config.state_dir == Path("/var/lib/syncd/inet6")
    assert config.repo.branch == "main" and config.repo.urls == ("git://h/x",)
    assert config.trust.verify == "all" and config.tinc.reload == "auto" and config.interval == 300
    assert config.repo.timeout == 60.0 and config.repo.max_fetch_bytes == 256 * 1024 * 1024
    assert config.trust.follow_repo is True and config.trust.max_age is None
    assert config.trust.max_clock_skew == 3600.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90", 90.0), ("45s", 45.0), ("10m", 600.0), ("1.5h", 5400.0), ("14d", 14 * 86400.0), (2.5, 2.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [0, -5, "0s", "-1m", "10 minutes", "1w", "h", "", True, [1], "nan"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [(65536, 65536), ("65536", 65536), ("64KiB", 65536), ("256MiB", 256 << 20), ("1GiB", 1 << 30), ("1.5KiB", 1536)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", [0, -1, "0MiB", "256MB", "256M", "1TiB", "KiB", 1.5, False])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_new_keys_are_read(signers: Path) -> None:
    data = minimal(signers)
    data["repo"] = {"url": "git://h/x", "timeout": "2m", "max_fetch_bytes": "64MiB"}
    data["trust"] = {
        "allowed_signers": str(signers),
        "follow_repo": False,
        "max_age": "14d",
        "max_clock_skew": "30m",
    }
    config = parse_config(data)
    assert (config.repo.timeout, config.repo.max_fetch_bytes) == (120.0, 64 << 20)
    assert config.trust.follow_repo is False
    assert (config.trust.max_age, config.trust.max_clock_skew) == (14 * 86400.0, 1800.0)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, signers: Path) -> None:
    path = tmp_path / "etc" / "inet6.yaml"
    path.parent.mkdir()
    path.write_text(
        f"net: inet6\nnode: my_pc\nrepo: {{url: /srv/hosts.git}}\ntrust: {{allowed_signers: {signers}}}\n"
        "state_dir: state\ntinc: {dir: tinc}\n"
    )
    config = load_config(path)
    assert config.state_dir == path.parent / "state"
    assert config.tinc.dir == path.parent / "tinc"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"net": None}, "net: is required"),
        ({"net": "in/et"}, "net: 'in/et' is not a valid tinc network name"),
        ({"node": "my-pc"}, "node: 'my-pc' is not a valid tinc node name"),
        ({"repo": {}}, "repo.url: is required"),
        ({"repo": {"url": "x", "branch": "../x"}}, "repo.branch"),
        ({"repo": {"url": "x", "mirrors": "y"}}, "repo.mirrors: must be a list"),
        ({"repo": {"url": "x", "mirrors": [""]}}, "repo.mirrors[0]: must be a non-empty string"),
        ({"repo": "x"}, "repo must be a mapping"),
        (
            {"repo": {"url": "https://h/x", "ca_file": "/nonexistent.pem"}},
            "repo.ca_file: /nonexistent.pem: no such file",
        ),
        ({"trust": {"allowed_signers": "/nonexistent"}}, "trust.allowed_signers: /nonexistent: no such file"),
        ({"trust": {"allowed_signers": "{s}", "verify": "some"}}, "trust.verify: 'some' must be one of all, tip"),
        ({"tinc": {"reload": "kill"}}, "tinc.reload: 'kill' must be one of"),
        ({"tinc": {"reload": "command"}}, "tinc.command: is required"),
        ({"tinc": {"dir": 5}}, "tinc.dir: must be a string, not int 5"),
        ({"interval": 0}, "interval: 0 must be between 1 and 86400"),
        ({"interval": True}, "interval: must be an integer, not a boolean"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"repo": {"url": "x", "timeout": 0}}, "repo.timeout: 0 must be more than zero"),
        ({"repo": {"url": "x", "timeout": "-3s"}}, "repo.timeout: '-3s' is not a duration"),
        ({"repo": {"url": "x", "timeout": "2d"}}, "repo.timeout: '2d' is more than 1d"),
        ({"repo": {"url": "x", "timeout": True}}, "repo.timeout: must be "),
        ({"repo": {"url": "x", "max_fetch_bytes": "256MB"}}, "repo.max_fetch_bytes: '256MB' is not a size"),
        ({"repo": {"url": "x", "max_fetch_bytes": 0}}, "repo.max_fetch_bytes: 0 must be more than zero"),
        ({"repo": {"url": "x", "max_fetch_bytes": 100}}, "repo.max_fetch_bytes: 100 must be between"),
        ({"repo": {"url": "x", "max_fetch_bytes": "100GiB"}}, "repo.max_fetch_bytes: '100GiB' must be between"),
        ({"trust": {"allowed_signers": "{s}", "follow_repo": "yes"}}, "trust.follow_repo: must be true or false"),
        ({"trust": {"allowed_signers": "{s}", "max_age": "0d"}}, "trust.max_age: '0d' must be more than zero"),
        ({"trust": {"allowed_signers": "{s}", "max_age": "20000d"}}, "trust.max_age: '20000d' is more than"),
        ({"trust": {"allowed_signers": "{s}", "max_clock_skew": "soon"}}, "trust.max_clock_skew: 'soon' is not"),
        ({"tinc": {"pidfile": "/run/x", "extra": 1}}, "tinc.extra: unknown key"),
    ],
)
def test_errors_name_the_key(signers: Path, change: dict[str, object], message: str) -> None:
    data = minimal(signers)
    for key, value in change.items():
        if isinstance(value, dict) and "allowed_signers" in value:
            value = {k: (str(signers) if v == "{s}" else v) for k, v in value.items()}
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    with pytest.raises(ConfigError) as info:
        parse_config(data, "/etc/syncd/inet6.yaml")
    assert info.value.exit_code == 2
    assert info.value.message.startswith("/etc/syncd/inet6.yaml: ")
    assert message in info.value.message


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("net: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://deploy:s3cret@git.example.org/vpn/hosts.git", "https://deploy:***@git.example.org/vpn/hosts.git"),
        ("https://git.example.org/hosts.git?private_token=abc", "https://git.example.org/hosts.git?private_token=***"),
        ("ssh://git@git.example.org/vpn/hosts.git", "ssh://git@git.example.org/vpn/hosts.git"),
        ("git://git.example.org/hosts.git", "git://git.example.org/hosts.git"),
        ("/srv/git/hosts.git", "/srv/git/hosts.git"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
