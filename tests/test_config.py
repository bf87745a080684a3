"""The node config: defaults, every kind of error naming its key, redaction."""

from __future__ import annotations

import io
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from syncd.cli.main import main
from syncd.errors import ConfigError
from syncd.git.urls import redact_url
from syncd.node.config import config_path, load_config, parse_config
from syncd.rules.units import parse_duration, parse_size
from tests.conftest import EXAMPLE_REPO, ROOT
from tests.syncenv import Hub, admin_and_signers, make_node


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


# Every duration key of the node config, each read by units.parse_duration.
DURATION_KEYS = ("interval", "repo.timeout", "trust.max_age", "trust.max_clock_skew", "notify.min_gap")


@pytest.mark.parametrize("key", DURATION_KEYS)
@pytest.mark.parametrize("text", [90, "90", "5m", "10m", "1.5h", "2.5"])
def test_every_duration_key_takes_what_the_readme_says(signers: Path, key: str, text: object) -> None:
    data = minimal(signers)
    section, _, name = key.rpartition(".")
    if section:
        data[section] = {**data.get(section, {}), name: text}  # type: ignore[dict-item]
    else:
        data[name] = text
    config = parse_config(data)
    got = getattr(getattr(config, section), name) if section else getattr(config, name)
    assert got == parse_duration(text)


def test_the_duration_keys_are_all_the_keys_that_hold_durations(signers: Path) -> None:
    """Every key of the schema given "5m": exactly DURATION_KEYS read it as 300 seconds."""
    from syncd.node.config import SCHEMA

    taking = []
    for section, keys in SCHEMA.items():
        for name in keys if keys is not None else (section,):
            data = minimal(signers)
            if keys is not None:
                data[section] = {**data.get(section, {}), name: "5m"}  # type: ignore[dict-item]
            else:
                data[name] = "5m"
            try:
                config = parse_config(data)
            except ConfigError:
                continue
            value = getattr(getattr(config, section), name) if keys is not None else getattr(config, name)
            if value == 300.0:
                taking.append(f"{section}.{name}" if keys is not None else name)
    assert sorted(taking) == sorted(DURATION_KEYS)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, signers: Path) -> None:
    path = tmp_path / "etc" / "inet6.yaml"
    (path.parent / "tinc").mkdir(parents=True)
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
        ({"interval": 0}, "interval: 0 must be more than zero"),
        ({"interval": "0.5s"}, "interval: '0.5s' is less than 1s"),
        ({"interval": "2d"}, "interval: '2d' is more than 1d"),
        ({"interval": "5 minutes"}, "interval: '5 minutes' is not a duration (seconds, or a number with s, m, h, d"),
        ({"interval": True}, "interval: must be an integer or a number or a string, not a boolean"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"notify": {"fanout": 2}}, "notify.fanout: 2 must be 0 (tell none) or from 3 to 16"),
        ({"notify": {"listen": "everywhere"}}, "notify.listen: 'everywhere' must be auto or a list of addresses"),
        ({"notify": {"listen": ["vpn0"]}}, "notify.listen[0]: 'vpn0' is not an IP address"),
        ({"notify": {"port": 0}}, "notify.port: 0 must be from 1 to 65535"),
        ({"notify": {"min_gap": "0.01s"}}, "notify.min_gap: '0.01s' is less than"),
        ({"notify": {"webhook": "8655"}}, "notify.webhook: '8655' must be ADDRESS:PORT"),
        ({"notify": {"webhook": "forge:8655"}}, "notify.webhook: 'forge' is not an IP address"),
        ({"notify": {"webhook_secret_file": "/nonexistent"}}, "notify.webhook_secret_file: /nonexistent: no such file"),
        ({"repo": {"url": "x", "timeout": 0}}, "repo.timeout: 0 must be more than zero"),
        ({"repo": {"url": "x", "timeout": "-3s"}}, "repo.timeout: '-3s' is not a duration"),
        ({"repo": {"url": "x", "timeout": "2d"}}, "repo.timeout: '2d' is more than 1d"),
        ({"repo": {"url": "x", "timeout": True}}, "repo.timeout: must be "),
        ({"repo": {"url": "x", "max_fetch_bytes": "256MB"}}, "repo.max_fetch_bytes: '256MB' is not a size"),
        ({"repo": {"url": "x", "max_fetch_bytes": 0}}, "repo.max_fetch_bytes: 0 must be more than zero"),
        ({"repo": {"url": "x", "max_fetch_bytes": 100}}, "repo.max_fetch_bytes: 100 must be from 1KiB to 64GiB"),
        ({"repo": {"url": "x", "max_fetch_bytes": "100GiB"}}, "repo.max_fetch_bytes: '100GiB' must be from 1KiB"),
        ({"trust": {"allowed_signers": "{s}", "follow_repo": "yes"}}, "trust.follow_repo: must be true or false"),
        ({"trust": {"allowed_signers": "{s}", "max_age": "0d"}}, "trust.max_age: '0d' must be more than zero"),
        ({"trust": {"allowed_signers": "{s}", "max_age": "20000d"}}, "trust.max_age: '20000d' is more than"),
        ({"trust": {"allowed_signers": "{s}", "max_clock_skew": "soon"}}, "trust.max_clock_skew: 'soon' is not"),
        ({"tinc": {"pidfile": "/run/x", "extra": 1}}, "tinc.extra: unknown key"),
        ({"repo": {"url": "x", "mirrors": [1]}}, "repo.mirrors[0]: must be a non-empty string"),
        ({"tinc": {"command": "reload tincd"}}, "tinc.command: must be a list, not str"),
        ({"metrics_file": ["a"]}, "metrics_file: must be a string, not list"),
        ({"trust": ["x"]}, "trust must be a mapping, not list"),
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


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # a typo is named, with the key meant, before the key it hides is missed
        ({"trust": {"allowed_signer": "x"}}, "trust.allowed_signer: unknown key (did you mean trust.allowed_signers?)"),
        ({"repo": {"url": "x", "brnach": "main"}}, "repo.brnach: unknown key (did you mean repo.branch?)"),
        ({"repo": {"url": "x", "max_fetch_byte": 1}}, "repo.max_fetch_byte: unknown key (did you mean repo.max_fetch_"),
        ({"intervall": 60}, "intervall: unknown key (did you mean interval?)"),
        # the right key in the wrong section
        ({"allowed_signers": "x"}, "allowed_signers: unknown key (did you mean trust.allowed_signers?)"),
        ({"trust": {"allowed_signers": "{s}", "url": "x"}}, "trust.url: unknown key (did you mean repo.url?)"),
        ({"tinc": {"zzz": 1}}, "tinc.zzz: unknown key (known: dir, reload, pidfile, command)"),
        ({1: "x"}, "1: unknown key (known: net, node, repo,"),
    ],
)
def test_unknown_keys_come_first_with_the_closest_known_key(
    signers: Path, change: dict[object, object], message: str
) -> None:
    data: dict[object, object] = {key: value for key, value in minimal(signers).items()}
    data.update(change)
    trust = change.get("trust")
    if isinstance(trust, dict) and trust.get("allowed_signers") == "{s}":
        data["trust"] = {**trust, "allowed_signers": str(signers)}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "/etc/syncd/inet6.yaml")
    assert message in info.value.message
    assert "is required" not in info.value.message


def test_every_unknown_key_is_reported_at_once(signers: Path) -> None:
    data = {**minimal(signers), "colour": 1, "repo": {"url": "x", "brnach": "main"}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "c.yaml")
    assert info.value.message == (
        "c.yaml: colour: unknown key (known: net, node, repo, trust, tinc, state_dir, interval, metrics_file, notify); "
        "repo.brnach: unknown key (did you mean repo.branch?)"
    )


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


# --- the config against the node ------------------------------------------------------------


def node_files(tmp_path: Path, tinc_conf: str | None = "Name = my_pc\n", **extra: object) -> Path:
    """A config file, its allowed_signers and tinc directory, as on a node."""
    signers = tmp_path / "inet6.allowed_signers"
    signers.write_text("")
    signers.chmod(0o644)
    tinc = tmp_path / "tinc"
    tinc.mkdir(exist_ok=True)
    if tinc_conf is not None:
        (tinc / "tinc.conf").write_text(tinc_conf)
    data = {**minimal(signers), "tinc": {"dir": str(tinc)}, **extra}
    path = tmp_path / "inet6.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o644)
    return path


@pytest.mark.parametrize(
    "tinc_conf",
    [
        None,
        "Name = my_pc\n",
        "# Name = other\n\nname my_pc\nName = other\n",  # the first Name wins, in any case
        "NAME=my_pc\r\nDeviceType = tap\n",
        "Name = $HOST\n",  # tinc 1.1 expands it from the environment
        "DeviceType = tap\n",
    ],
)
def test_tinc_conf_naming_this_node_or_no_name(tmp_path: Path, tinc_conf: str | None) -> None:
    assert load_config(node_files(tmp_path, tinc_conf)).node == "my_pc"


@pytest.mark.parametrize(
    ("tinc_conf", "name"),
    [
        ("Name = my_laptop\n", "my_laptop"),
        ("Port = 655\nname\tgateway\nName = my_pc\n", "gateway"),
        ("Name = my_PC\n", "my_PC"),  # tinc names are case-sensitive
    ],
)
def test_tinc_conf_naming_another_node_is_refused(tmp_path: Path, tinc_conf: str, name: str) -> None:
    path = node_files(tmp_path, tinc_conf)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == 2
    assert info.value.message == (
        f"{path}: node: 'my_pc' is not this node's tinc Name: {tmp_path / 'tinc' / 'tinc.conf'} says Name = {name}"
    )


def test_tinc_dir_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "inet6"
    path = node_files(tmp_path, tinc={"dir": str(missing)})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == f"{path}: tinc.dir: {missing}: no such directory"
    assert info.value.hint is not None and "syncd creates only" in info.value.hint
    assert not missing.exists()
    missing.parent.mkdir()
    missing.write_text("")
    with pytest.raises(ConfigError, match=r"tinc\.dir: .*: not a directory"):
        load_config(path)


def test_the_hint_for_a_missing_tinc_dir_sets_the_node_up_as_pasted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere" / "inet6"
    path = node_files(tmp_path, tinc={"dir": str(missing)}, node="newbie")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    hint = info.value.hint or ""
    command = re.search(r"`(syncd add-node [^`]+)`", hint)
    assert command is not None and command[1] == f"syncd add-node newbie --net inet6 --tinc-dir {missing}"
    clone = tmp_path / "clone"
    shutil.copytree(EXAMPLE_REPO, clone)
    monkeypatch.chdir(clone)  # "in a clone of the hosts repository"
    monkeypatch.setenv("HOME", str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    assert main([*shlex.split(command[1])[1:], "--rsa-bits", "2048"], out, err) == 0, err.getvalue()
    assert load_config(path).tinc.dir == missing


@pytest.mark.parametrize("which", ["config", "allowed_signers"])
@pytest.mark.parametrize(("mode", "refused"), [(0o664, "group"), (0o646, "others"), (0o644, None), (0o600, None)])
def test_files_others_may_write_are_refused(tmp_path: Path, which: str, mode: int, refused: str | None) -> None:
    path = node_files(tmp_path)
    target = path if which == "config" else tmp_path / "inet6.allowed_signers"
    target.chmod(mode)
    if refused is None:
        assert load_config(path).node == "my_pc"
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == 2
    assert info.value.message.startswith(f"{target}: the ")
    assert f"is writable by {refused} (mode {mode:04o}); syncd refuses it" in info.value.message
    assert info.value.hint == f"chmod go-w {target}"


# --- NET: short for -c $SYNCD_CONFIG_DIR/NET.yaml ------------------------------------------


def test_command_names_the_net_when_the_config_is_its_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCD_CONFIG_DIR", str(tmp_path))
    config = load_config(node_files(tmp_path))  # tmp_path/inet6.yaml
    assert config.command("sync --allow-rewind") == "syncd sync inet6 --allow-rewind"
    assert config.command("status") == "syncd status inet6"
    monkeypatch.setenv("SYNCD_CONFIG_DIR", str(tmp_path / "elsewhere"))
    assert config.command("sync --allow-rewind") == f"syncd sync -c {tmp_path / 'inet6.yaml'} --allow-rewind"
    monkeypatch.delenv("SYNCD_CONFIG_DIR")
    assert config_path("inet6") == Path("/etc/syncd/inet6.yaml")
    odd = tmp_path / "my node.yaml"
    odd.write_bytes((tmp_path / "inet6.yaml").read_bytes())
    odd.chmod(0o600)
    assert load_config(odd).command("sync") == f"syncd sync -c '{odd}'"


def test_command_gives_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = node_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert load_config(Path(path.name)).command("run") == f"syncd run -c {path}"


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_net_shorthand_for_every_command_that_takes_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers)
    etc = tmp_path / "etc-syncd"
    etc.mkdir()
    shutil.copy(node.config, etc / "inet6.yaml")
    monkeypatch.setenv("SYNCD_CONFIG_DIR", str(etc))
    code, out, err = cli("sync", "inet6", "--dry-run")
    assert code == 0, err
    assert out.startswith(f"plan for {hub.tip[:12]}")
    code, out, err = cli("sync", "--dry-run", "inet6")
    assert code == 0, err
    assert cli("sync", "inet6")[0] == 0
    assert node.files()  # the shorthand synced the node the file describes
    code, out, _ = cli("status", "inet6")
    assert code == 0 and out.startswith("syncd inet6 OK: ")
    code, _, err = cli("status", "inet7")
    assert (code, err) == (
        2,
        f"syncd status: {etc / 'inet7.yaml'}: no such config file\n  hint: the networks configured in {etc}: inet6\n",
    )
    (etc / "inet6.yaml").unlink()
    code, _, err = cli("status", "inet6")
    assert code == 2 and err.endswith(f"  hint: no network is configured in {etc}: write {etc}/NET.yaml (README, "
                                      '"Deploy it on a node"), or give the file with -c CONFIG\n')  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("sync",), "syncd sync: which network? give -c CONFIG, or NET (short for -c {etc}/NET.yaml)\n"),
        (("status", "--format", "json"), "syncd status: which network? give -c CONFIG, or NET"),
        (("run",), "syncd run: which network? give -c CONFIG, or NET"),
        (
            ("sync", "-c", "x.yaml", "inet6"),
            "syncd sync: error: give the node's config as -c CONFIG or as NET, not both",
        ),
        (
            ("sync", "inet6", "-c", "x.yaml"),
            "syncd sync: error: give the node's config as -c CONFIG or as NET, not both",
        ),
        (("status", "in/et"), "syncd status: error: NET 'in/et' is not a valid tinc network name"),
    ],
)
def test_net_or_config_exactly_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    monkeypatch.setenv("SYNCD_CONFIG_DIR", str(tmp_path))
    code, _, err = cli(*argv)
    assert code == 2
    assert message.format(etc=tmp_path) in err + capsys.readouterr().err


def test_the_example_node_config_is_the_readmes_and_loads(tmp_path: Path) -> None:
    # examples/inet6.yaml is the conffile the Debian package installs as
    # /etc/syncd/inet6.yaml.example: the README's node config, whole
    example = (ROOT / "examples" / "inet6.yaml").read_text()
    body = "".join(line for line in example.splitlines(keepends=True) if not line.startswith("#"))
    blocks = re.findall(r"^```yaml\n(net: inet6 .*?)^```$", (ROOT / "README.md").read_text(), re.M | re.S)
    assert blocks == [body]

    (tmp_path / "tinc").mkdir()
    (tmp_path / "inet6.allowed_signers").write_text("")
    config_file = tmp_path / "inet6.yaml"
    config_file.write_text(
        example.replace("/etc/syncd/", f"{tmp_path}/").replace("/etc/tinc/inet6", str(tmp_path / "tinc"))
    )
    config = load_config(config_file)
    assert (config.net, config.node, config.tinc.dir) == ("inet6", "my_pc", tmp_path / "tinc")
    assert config.trust.max_age == 14 * 86400 and config.repo.urls == ("ssh://git@git.example.org/vpn/hosts.git",)


def test_the_notify_section_and_its_defaults(signers: Path) -> None:
    from syncd.node.notifyconfig import NotifyConfig

    assert parse_config(minimal(signers)).notify == NotifyConfig(None, 6550, 1.0, 5, None, None)
    data = minimal(signers)
    data["notify"] = {"listen": ["10.0.0.1", "FD00::1"], "port": 7000, "min_gap": "2s", "fanout": 0}
    data["notify"]["webhook"] = "[fd00::1]:8655"  # type: ignore[index]
    notify = parse_config(data).notify
    assert (notify.listen, notify.port, notify.min_gap, notify.fanout) == (("10.0.0.1", "fd00::1"), 7000, 2.0, 0)
    assert notify.webhook == ("fd00::1", 8655)
    data["notify"] = {"listen": []}
    assert parse_config(data).notify.listen == ()
