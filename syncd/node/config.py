"""The node's config file (``/etc/syncd/NET.yaml``) → a frozen ``Config``.

Parsed once at start-up; every problem is a ``ConfigError`` (exit 2) that
names the key.  Unknown keys are reported first, at any depth, with the
closest known key: a typo must never surface as "X is required" or, worse,
be silently ignored.  ``load_config`` also checks the file against the node
(``check_node``).  URLs may carry secrets (``https://user:token@host/...``):
every message and log line shows ``git.urls.redact_url`` of one instead.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from syncd.errors import ConfigError, UsageError
from syncd.node.notifyconfig import NotifyConfig, parse_notify
from syncd.rules.units import format_duration, format_size, parse_duration, parse_size
from syncd.signing.allowed_signers import AllowedSigner, parse_allowed_signers
from syncd.tinc.names import is_node_name

RELOAD_METHODS = ("auto", "signal", "tinc", "systemd", "command", "none")
VERIFY_MODES = ("all", "tip")
DEFAULT_CONFIG_DIR = Path("/etc/syncd")
_NETNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")  # check_netname(), strict
_BRANCH_RE = re.compile(r"(?!.*\.\.)(?!/)(?!.*/\Z)[A-Za-z0-9._/-]{1,200}\Z")

# Every key the file may hold: a section maps to its own keys.
SCHEMA: dict[str, tuple[str, ...] | None] = {
    "net": None,
    "node": None,
    "repo": ("url", "mirrors", "branch", "timeout", "max_fetch_bytes", "ssh_command", "ca_file"),
    "trust": ("allowed_signers", "verify", "follow_repo", "max_age", "max_clock_skew"),
    "tinc": ("dir", "reload", "pidfile", "command"),
    "state_dir": None,
    "interval": None,
    "metrics_file": None,
    "notify": ("listen", "port", "min_gap", "fanout", "webhook", "webhook_secret_file"),
}


@dataclass(frozen=True, slots=True)
class RepoConfig:
    url: str
    mirrors: tuple[str, ...] = ()
    branch: str = "main"
    ssh_command: str | None = None  # e.g. "ssh -i /etc/syncd/deploy_key -o UserKnownHostsFile=..."
    ca_file: Path | None = None  # CA certificates for https:// (a private git server)
    timeout: float = 60.0  # seconds for one URL's whole fetch (the other URLs are asked all the same)
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
    max_clock_skew: float = 3600.0  # seconds a commit may predate a parent, or lie ahead of the clock


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
    interval: float = 300.0  # seconds between passes of `run`
    metrics_file: Path | None = None
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    source: str = ""  # the file it was read from, for messages

    def command(self, args: str) -> str:
        """The command line a user can paste to run ``args`` on this config:
        ``command("sync --allow-rewind")`` is ``syncd sync inet6 --allow-rewind``
        when the config is ``NET.yaml`` in the config directory, else
        ``syncd sync -c /path/to/it.yaml --allow-rewind``."""
        subcommand, _, rest = args.strip().partition(" ")
        source = Path(self.source).absolute() if self.source else None
        if source is not None and source.resolve() == config_path(self.net).resolve():
            target = self.net
        else:
            target = f"-c {shlex.quote(str(source or 'CONFIG'))}"
        return " ".join(part for part in ("syncd", subcommand, target, rest.strip()) if part)


def config_dir() -> Path:
    """Where ``NET`` points: ``$SYNCD_CONFIG_DIR``, else ``/etc/syncd``."""
    return Path(os.environ.get("SYNCD_CONFIG_DIR") or DEFAULT_CONFIG_DIR)


def config_path(net: str) -> Path:
    """The config file the ``NET`` shorthand names: ``config_dir()/NET.yaml``."""
    if not _NETNAME_RE.match(net):
        raise UsageError(f"NET {net!r} is not a valid tinc network name (letters, digits, _ . -)")
    return config_dir() / f"{net}.yaml"


def _configured_networks() -> str:
    """The hint for a missing config file: the networks configured, or where to start."""
    directory = config_dir()
    try:
        nets = sorted(p.stem for p in directory.glob("*.yaml") if _NETNAME_RE.match(p.stem))
    except OSError:
        nets = []
    if not nets:
        return (
            f'no network is configured in {directory}: write {directory}/NET.yaml (README, "Deploy it on a '
            'node"), or give the file with -c CONFIG'
        )
    return f"the networks configured in {directory}: {', '.join(nets)}"


def unknown_keys(data: object, source: str) -> ConfigError | None:
    """Every key of the document that ``SCHEMA`` does not know, in one error,
    each with the closest known key; None when all are known."""
    if not isinstance(data, Mapping):
        return None  # reported as "must be a mapping" by the reader
    problems = [_unknown(str(key), "", tuple(SCHEMA)) for key in data if str(key) not in SCHEMA]
    for section, keys in SCHEMA.items():
        nested = data.get(section)
        if keys is not None and isinstance(nested, Mapping):
            problems += [_unknown(str(key), f"{section}.", keys) for key in nested if str(key) not in keys]
    if not problems:
        return None
    return ConfigError(f"{source}: {'; '.join(problems)}")


def _unknown(key: str, prefix: str, known: tuple[str, ...]) -> str:
    import difflib  # only for a config with a typo

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{prefix}{key}: unknown key (did you mean {prefix}{close[0]}?)"
    # the right key in the wrong place: `allowed_signers` at the top, `url` under trust
    elsewhere = [
        f"{section}.{name}" if keys is not None else name
        for section, keys in SCHEMA.items()
        for name in (keys if keys is not None else (section,))
    ]
    leaves = {name.rpartition(".")[2]: name for name in elsewhere}
    close = difflib.get_close_matches(key, leaves, n=1, cutoff=0.8)
    if close and leaves[close[0]] != f"{prefix}{close[0]}":
        return f"{prefix}{key}: unknown key (did you mean {leaves[close[0]]}?)"
    return f"{prefix}{key}: unknown key (known: {', '.join(known)})"


class _Reader:
    """Typed access to one mapping of the YAML document, naming keys in errors."""

    def __init__(self, data: object, prefix: str, source: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            what = prefix.rstrip(".") or "the file"
            raise ConfigError(f"{source}: {what} must be a mapping, not {type(data).__name__} {data!r:.60}")
        self.data: Mapping[str, Any] = data
        self.prefix = prefix
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.prefix}{key}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(key, f"must be {_kind_name(kind)}, not a boolean")
        if not isinstance(value, kind):
            raise self.error(key, f"must be {_kind_name(kind)}, not {type(value).__name__} {value!r:.60}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        items = self.get(key, list, [])
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item:
                raise self.error(f"{key}[{i}]", "must be a non-empty string")
        return tuple(items)

    def duration(self, key: str, default: float, maximum: float, minimum: float = 0.0) -> float:
        seconds = self.optional_duration(key, maximum, minimum)
        return default if seconds is None else seconds

    def optional_duration(self, key: str, maximum: float, minimum: float = 0.0) -> float | None:
        """Every duration key is read here, by ``units.parse_duration``:
        ``90``, ``"90"``, ``"10m"``, ``"1.5h"``, ``"14d"``."""
        value = self.get(key, (int, float, str))
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if seconds > maximum:
            raise self.error(key, f"{value!r} is more than {format_duration(maximum)}")
        if seconds < minimum:
            raise self.error(key, f"{value!r} is less than {format_duration(minimum)}")
        return seconds

    def size(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self.get(key, (int, str), default)
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if not minimum <= size <= maximum:
            raise self.error(key, f"{value!r} must be from {format_size(minimum)} to {format_size(maximum)}")
        return size

    def nested(self, key: str) -> _Reader:
        return _Reader(self.data.get(key), f"{self.prefix}{key}.", self.source)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_config(path: Path) -> Config:
    """Read, parse and check the config file ``path`` against this node."""
    try:
        with path.open("rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            raw = fh.read()
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file", hint=_configured_networks()) from None
    except PermissionError:
        raise  # errors.outcome names the path and the user
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    refuse_writable(path, mode, "config file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    config = parse_config(data, str(path), base=path.parent)
    check_node(config)
    return config


def parse_config(data: object, source: str = "config", base: Path | None = None) -> Config:
    """Build a ``Config`` from parsed YAML.  Relative paths are taken
    relative to ``base`` (the config file's directory)."""
    top = _Reader(data, "", source)
    unknown = unknown_keys(data, source)
    if unknown is not None:
        raise unknown

    def path_of(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() or base is None else base / p

    net = top.get("net", str, required=True)
    if not _NETNAME_RE.match(net):
        raise top.error("net", f"{net!r} is not a valid tinc network name")
    node = top.get("node", str, required=True)
    if not is_node_name(node):
        raise top.error("node", f"{node!r} is not a valid tinc node name")
    repo = _repo(top.nested("repo"), path_of)
    trust = _trust(top.nested("trust"), path_of)

    tinc_r = top.nested("tinc")
    tinc_dir = path_of(tinc_r.get("dir", str, f"/etc/tinc/{net}"))
    reload = tinc_r.get("reload", str, "auto")
    if reload not in RELOAD_METHODS:
        raise tinc_r.error("reload", f"{reload!r} must be one of {', '.join(RELOAD_METHODS)}")
    pidfile = path_of(tinc_r.get("pidfile", str, f"/run/tinc.{net}.pid"))
    command = tinc_r.strings("command")
    if reload == "command" and not command:
        raise tinc_r.error("command", "is required (an argv list) when reload is 'command'")

    state_dir = path_of(top.get("state_dir", str, f"/var/lib/syncd/{net}"))
    interval = top.duration("interval", 300.0, maximum=86400, minimum=1)
    metrics = top.get("metrics_file", str)
    return Config(
        net=net,
        node=node,
        repo=repo,
        trust=trust,
        tinc=TincConfig(tinc_dir, reload, pidfile, command),
        state_dir=state_dir,
        interval=interval,
        metrics_file=path_of(metrics) if metrics else None,
        notify=parse_notify(top.nested("notify"), path_of),
        source=source,
    )


def _repo(r: _Reader, path_of: Callable[[str], Path]) -> RepoConfig:
    url = r.get("url", str, required=True)
    mirrors = r.strings("mirrors")
    branch = r.get("branch", str, "main")
    if not _BRANCH_RE.match(branch):
        raise r.error("branch", f"{branch!r} is not a valid branch name")
    ssh_command = r.get("ssh_command", str)
    ca_text = r.get("ca_file", str)
    ca_file = path_of(ca_text) if ca_text else None
    timeout = r.duration("timeout", 60.0, maximum=86400, minimum=1)
    # below 1 KiB not even the ref advertisement fits; above 64 GiB is a typo
    max_fetch_bytes = r.size("max_fetch_bytes", 256 * 1024**2, minimum=1024, maximum=64 * 1024**3)
    if ca_file is not None and not ca_file.is_file():
        raise r.error("ca_file", f"{ca_file}: no such file")
    return RepoConfig(url, mirrors, branch, ssh_command, ca_file, timeout, max_fetch_bytes)


def _trust(r: _Reader, path_of: Callable[[str], Path]) -> TrustConfig:
    signers = path_of(r.get("allowed_signers", str, required=True))
    verify = r.get("verify", str, "all")
    if verify not in VERIFY_MODES:
        raise r.error("verify", f"{verify!r} must be one of {', '.join(VERIFY_MODES)}")
    follow_repo = r.get("follow_repo", bool, True)
    max_age = r.optional_duration("max_age", maximum=3650 * 86400)
    max_clock_skew = r.duration("max_clock_skew", 3600.0, maximum=365 * 86400)
    if not signers.is_file():
        raise r.error("allowed_signers", f"{signers}: no such file")
    return TrustConfig(signers, verify, follow_repo, max_age, max_clock_skew)


# --- the config against the node it runs on ----------------------------------------------

# read_config_file() in tinc's src/conf.c: the variable runs to the first
# space, tab or '='; then blanks, one optional '=', blanks; the rest is the value.
_CONF_LINE_RE = re.compile(r"([^\t =]+)[\t ]*(?:=[\t ]*)?(.*)")


def check_node(config: Config) -> None:
    """What parsing alone cannot see: the tinc directory is there, its
    tinc.conf names this node, and the trust root is not writable by others."""
    tinc_dir = config.tinc.dir
    if not tinc_dir.is_dir():
        what = "not a directory" if tinc_dir.exists() else "no such directory"
        raise ConfigError(
            f"{config.source}: tinc.dir: {tinc_dir}: {what}",
            hint=f"syncd creates only {tinc_dir / 'hosts'} inside it: set tinc.dir to this node's tinc "
            f"directory, or set tinc up there first (a tinc.conf with Name = {config.node}); for a new node, "
            f"`{_add_node_command(config)}` in a clone of the hosts repository does that",
        )
    conf = tinc_dir / "tinc.conf"
    name = tinc_conf_name(conf)
    if name is not None and not name.startswith("$") and name != config.node:
        raise ConfigError(
            f"{config.source}: node: {config.node!r} is not this node's tinc Name: {conf} says Name = {name}",
            hint="node must be the Name tincd runs as, or syncd would check and install the wrong node's key",
        )
    with_mode = config.trust.allowed_signers
    try:
        mode = with_mode.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{config.source}: trust.allowed_signers: {with_mode}: {exc.strerror}") from None
    refuse_writable(with_mode, mode, "allowed_signers file (the trust root)")


def _add_node_command(config: Config) -> str:
    command = f"syncd add-node {config.node} --net {config.net}"
    if config.tinc.dir != Path("/etc/tinc") / config.net:
        command += f" --tinc-dir {shlex.quote(str(config.tinc.dir))}"
    return command


def tinc_conf_name(conf: Path) -> str | None:
    """The ``Name`` tincd takes from ``conf``: the first one, its variable
    name case-insensitive (``Name = x``, ``name x``); None without one.

    tinc 1.1 expands a value starting with ``$`` from the environment
    (``$HOST``: the host name); the caller cannot know that value."""
    try:
        data = conf.read_bytes()
    except FileNotFoundError:
        return None
    except PermissionError:
        raise  # errors.outcome names the path and the user
    except OSError as exc:
        raise ConfigError(f"{conf}: cannot read: {exc.strerror}") from None
    for raw in data.split(b"\n"):
        line = raw.decode("utf-8", "replace").removesuffix("\r").rstrip(" \t")
        if not line or line[0] == "#":
            continue
        match = _CONF_LINE_RE.match(line)
        if match is None or not match[2]:
            return None  # tincd stops reading here (and refuses to start)
        if match[1].lower() == "name":
            return match[2]
    return None


def load_signers(config: Config) -> list[AllowedSigner]:
    return read_signers_file(config.trust.allowed_signers, "trust.allowed_signers: ")


def read_signers_file(path: Path, what: str = "") -> list[AllowedSigner]:
    """An allowed_signers file of the node's (the trust root): at least
    one signer.  ``what`` names it in messages (the config key, an option)."""
    try:
        text = path.read_bytes()
    except PermissionError:
        raise  # errors.outcome names the path and the user
    except OSError as exc:
        raise ConfigError(f"{what}{path}: cannot read: {exc.strerror}") from None
    signers = parse_allowed_signers(text, str(path))
    if not signers:
        raise ConfigError(f"{what}{path}: no signer is listed")
    return signers


def refuse_writable(path: Path, mode: int, what: str) -> None:
    """Refuse a file that group or others may write, as OpenSSH's
    safe_path() refuses an authorized_keys file: whoever can edit the
    config or the trust root can make this node install anything."""
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{path}: the {what} is writable by {'group' if mode & stat.S_IWGRP else 'others'} "
            f"(mode {stat.S_IMODE(mode):04o}); syncd refuses it",
            hint=f"chmod go-w {shlex.quote(str(path))}",
        )
