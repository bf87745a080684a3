"""The node's config file (``/etc/syncd/NET.yaml``) → a frozen ``Config``.

Parsed once at start-up; every problem is a ``ConfigError`` (exit 2) that
names the key.  URLs may carry secrets (``https://user:token@host/...``):
``redact_url`` is what every message and log line shows instead.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from syncd.errors import ConfigError
from syncd.hostfile import NAME_RE

RELOAD_METHODS = ("auto", "signal", "tinc", "systemd", "command", "none")
VERIFY_MODES = ("all", "tip")
_NETNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")  # check_netname(), strict
_BRANCH_RE = re.compile(r"(?!.*\.\.)(?!/)(?!.*/\Z)[A-Za-z0-9._/-]{1,200}\Z")


@dataclass(frozen=True, slots=True)
class RepoConfig:
    url: str
    mirrors: tuple[str, ...] = ()
    branch: str = "main"
    ssh_command: str | None = None  # e.g. "ssh -i /etc/syncd/deploy_key -o UserKnownHostsFile=..."
    ca_file: Path | None = None  # CA certificates for https:// (a private git server)
    timeout: float = 60.0  # seconds for one URL's whole fetch; then the next mirror
    max_fetch_bytes: int = 256 * 1024**2  # bytes received from one URL in one fetch

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)


@dataclass(frozen=True, slots=True)
class TrustConfig:
    allowed_signers: Path
    verify: str = "all"
    follow_repo: bool = True  # the repo's own allowed_signers takes over once an admin commits it
    max_age: float | None = None  # seconds; an applied tip older than this is "stale"
    max_clock_skew: float = 3600.0  # seconds a first-parent commit may predate the last applied one


@dataclass(frozen=True, slots=True)
class TincConfig:
    dir: Path
    reload: str = "auto"
    pidfile: Path | None = None
    command: tuple[str, ...] = ()

    @property
    def hosts_dir(self) -> Path:
        return self.dir / "hosts"


@dataclass(frozen=True, slots=True)
class Config:
    net: str
    node: str
    repo: RepoConfig
    trust: TrustConfig
    tinc: TincConfig
    state_dir: Path
    interval: int = 300
    metrics_file: Path | None = None
    source: str = ""  # the file it was read from, for messages


def redact_url(url: str) -> str:
    """``url`` with any password and query values replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{host}"
    query = "&".join(f"{k}=***" if v else k for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class _Reader:
    """Typed access to one mapping of the YAML document, naming keys in errors."""

    def __init__(self, data: object, prefix: str, source: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping")
        self.data: Mapping[str, Any] = data
        self.prefix = prefix
        self.source = source
        self.used: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.prefix}{key}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(key, f"must be {_kind_name(kind)}, not a boolean")
        if not isinstance(value, kind):
            raise self.error(key, f"must be {_kind_name(kind)}, not {type(value).__name__} {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        items = self.get(key, list, [])
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item:
                raise self.error(f"{key}[{i}]", "must be a non-empty string")
        return tuple(items)

    def duration(self, key: str, default: float, maximum: float) -> float:
        seconds = self.optional_duration(key, maximum)
        return default if seconds is None else seconds

    def optional_duration(self, key: str, maximum: float) -> float | None:
        value = self.get(key, (int, float, str))
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if seconds > maximum:
            raise self.error(key, f"{value!r} is more than {_human_seconds(maximum)}")
        return seconds

    def size(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self.get(key, (int, str), default)
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if not minimum <= size <= maximum:
            raise self.error(key, f"{value!r} must be between {minimum} bytes and {maximum // 1024**3} GiB")
        return size

    def nested(self, key: str) -> _Reader:
        self.used.add(key)
        return _Reader(self.data.get(key), f"{self.prefix}{key}.", self.source)

    def finish(self) -> None:
        unknown = sorted(str(k) for k in self.data if k not in self.used)
        if unknown:
            raise self.error(unknown[0], f"unknown key (known: {', '.join(sorted(self.used))})")


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)\Z")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?\Z")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90"``, ``"10m"``, ``"1.5h"``, ``"14d"``.

    Raises ``ValueError`` with the reason; the caller names the key."""
    if isinstance(value, bool):
        raise ValueError("must be a duration (seconds, or a number with s, m, h, d), not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value.strip())):
        seconds = float(m[1]) * _DURATION_UNITS[m[2]]
    else:
        raise ValueError(f"{value!r} is not a duration (seconds, or a number with s, m, h, d: 90, 10m, 14d)")
    if not seconds > 0 or seconds != seconds:
        raise ValueError(f"{value!r} must be more than zero")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"64KiB"``, ``"256MiB"``, ``"1GiB"``."""
    if isinstance(value, bool):
        raise ValueError("must be a size (bytes, or a number with KiB, MiB, GiB), not a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value.strip())):
        size = int(float(m[1]) * _SIZE_UNITS[m[2]])
    else:
        raise ValueError(f"{value!r} is not a size (bytes, or a number with KiB, MiB, GiB: 65536, 256MiB)")
    if size <= 0:
        raise ValueError(f"{value!r} must be more than zero")
    return size


def _human_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a mapping",
        bool: "true or false",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path), base=path.parent)


def parse_config(data: object, source: str = "config", base: Path | None = None) -> Config:
    """Build a ``Config`` from parsed YAML.  Relative paths are taken
    relative to ``base`` (the config file's directory)."""
    top = _Reader(data, "", source)

    def path_of(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() or base is None else base / p

    net = top.get("net", str, required=True)
    if not _NETNAME_RE.match(net):
        raise top.error("net", f"{net!r} is not a valid tinc network name")
    node = top.get("node", str, required=True)
    if not NAME_RE.match(node):
        raise top.error("node", f"{node!r} is not a valid tinc node name")

    repo_r = top.nested("repo")
    url = repo_r.get("url", str, required=True)
    mirrors = repo_r.strings("mirrors")
    branch = repo_r.get("branch", str, "main")
    if not _BRANCH_RE.match(branch):
        raise repo_r.error("branch", f"{branch!r} is not a valid branch name")
    ssh_command = repo_r.get("ssh_command", str)
    ca_text = repo_r.get("ca_file", str)
    ca_file = path_of(ca_text) if ca_text else None
    timeout = repo_r.duration("timeout", 60, maximum=86400)
    max_fetch_bytes = repo_r.size("max_fetch_bytes", 256 * 1024**2, minimum=1024, maximum=64 * 1024**3)
    repo_r.finish()
    if ca_file is not None and not ca_file.is_file():
        raise repo_r.error("ca_file", f"{ca_file}: no such file")

    trust_r = top.nested("trust")
    signers = path_of(trust_r.get("allowed_signers", str, required=True))
    verify = trust_r.get("verify", str, "all")
    if verify not in VERIFY_MODES:
        raise trust_r.error("verify", f"{verify!r} must be one of {', '.join(VERIFY_MODES)}")
    follow_repo = trust_r.get("follow_repo", bool, True)
    max_age = trust_r.optional_duration("max_age", maximum=3650 * 86400)
    max_clock_skew = trust_r.duration("max_clock_skew", 3600, maximum=365 * 86400)
    trust_r.finish()
    if not signers.is_file():
        raise trust_r.error("allowed_signers", f"{signers}: no such file")

    tinc_r = top.nested("tinc")
    tinc_dir = path_of(tinc_r.get("dir", str, f"/etc/tinc/{net}"))
    reload = tinc_r.get("reload", str, "auto")
    if reload not in RELOAD_METHODS:
        raise tinc_r.error("reload", f"{reload!r} must be one of {', '.join(RELOAD_METHODS)}")
    pidfile = path_of(tinc_r.get("pidfile", str, f"/run/tinc.{net}.pid"))
    command = tinc_r.strings("command")
    if reload == "command" and not command:
        raise tinc_r.error("command", "is required (an argv list) when reload is 'command'")
    tinc_r.finish()

    state_dir = path_of(top.get("state_dir", str, f"/var/lib/syncd/{net}"))
    interval = top.get("interval", int, 300)
    if not 1 <= interval <= 86400:
        raise top.error("interval", f"{interval} must be between 1 and 86400 seconds")
    metrics = top.get("metrics_file", str)
    top.finish()

    return Config(
        net=net,
        node=node,
        repo=RepoConfig(url, mirrors, branch, ssh_command, ca_file, timeout, max_fetch_bytes),
        trust=TrustConfig(signers, verify, follow_repo, max_age, max_clock_skew),
        tinc=TincConfig(tinc_dir, reload, pidfile, command),
        state_dir=state_dir,
        interval=interval,
        metrics_file=path_of(metrics) if metrics else None,
        source=source,
    )
