"""Untrusted mirrors: every URL is asked for its tip, the newest one that
passes every rule is applied, and a URL that serves an older tip, a fork, a
frozen tip, an empty pack or nothing costs only its own answer
(docs/trust.md, "Mirrors").  Real git servers on loopback: the honest
``git daemon`` (tests/servers.py) and the hostile git:// server
(tests/hostile/)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncd.cli.main import main
from tests.gitutil import commit, git
from tests.hostile import hostile_git
from tests.servers import git_daemon
from tests.syncenv import Hub, Node
from tests.test_faults import Frozen, add_host, health, node_at


def applied(node_state: Path) -> str:
    value: str = json.loads((node_state / "state.json").read_text())["last_applied"]
    return value


def test_an_empty_pack_is_a_transient_failure_naming_the_url(hub: Hub, tmp_path: Path) -> None:
    """A server that advertises a real signed tip and sends an empty pack."""
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    tip = hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    frozen = Frozen(node)
    with hostile_git(hub.server, "phantom", tip=tip) as url:
        node.config.write_text(node.config.read_text().replace(str(hub.server), url))
        code, _, err = node.sync()
    assert code == 3, err
    assert "internal error" not in err and url in err and tip[:12] in err, err
    assert health(node)["last_error_reason"] == "fetch-failed"
    frozen.assert_unchanged()


def test_a_symlinked_hosts_directory_is_never_written_through(hub: Hub, tmp_path: Path) -> None:
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("not syncd's\n")
    real = node.hosts.with_name("hosts.real")
    node.hosts.rename(real)
    node.hosts.symlink_to(elsewhere)
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    for args in ((), ("--dry-run",)):
        code, _, err = node.sync(*args)
        assert code == 2, err
        assert str(node.hosts) in err and "symlink" in err, err
    assert [p.name for p in elsewhere.iterdir()] == ["keep"]
    assert health(node)["last_error_reason"] == "io-error"
    data, text = status(node)
    assert data["healthy"] is False and f"{node.hosts}: a symlink" in text, text
    # a file where the directory should be: the same
    node.hosts.unlink()
    node.hosts.write_text("")
    code, _, err = node.sync()
    assert code == 2 and str(node.hosts) in err and "not a directory" in err, err
    # the directory back: the next pass converges
    node.hosts.unlink()
    real.rename(node.hosts)
    code, _, err = node.sync()
    assert code == 0, err
    assert applied(node.state) == hub.tip


# --- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def honest(hub: Hub) -> Iterator[str]:
    """The hub's server behind a real ``git daemon``."""
    with git_daemon(hub.server.parent) as base:
        yield f"{base}/{hub.server.name}"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def static_mirror(hub: Hub) -> Iterator[str]:
    """The hub's server as plain files over HTTP (dumb HTTP: what any web
    server or object store serves), refreshed as a post-update hook would."""
    git(hub.server, "update-server-info")
    handler = functools.partial(_Quiet, directory=str(hub.server.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{hub.server.name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def frozen_copy(hub: Hub, path: Path) -> Path:
    """A bare copy of the server as it is now (a mirror that stops here)."""
    git(path.parent, "clone", "-q", "--mirror", str(hub.server), str(path))
    return path


def side_commit(hub: Hub, base: str, branch: str, edit: Callable[[Path], object], date: str | None = None) -> str:
    """An admin-signed commit on ``base`` pushed to ``branch`` (not main)."""
    git(hub.work, "checkout", "-q", "-b", branch, base)
    edit(hub.work)
    sha = commit(hub.work, f"on {branch}", hub.admin, date=date)
    git(hub.work, "push", "-q", "origin", f"{sha}:refs/heads/{branch}")
    git(hub.work, "checkout", "-q", "main")
    git(hub.work, "reset", "-q", "--hard", hub.tip)
    return sha


def with_urls(node: Node, first: str, *mirrors: str) -> None:
    """Point the node at ``first`` and ``mirrors``, in that order."""
    import yaml

    config = yaml.safe_load(node.config.read_text())
    config["repo"]["url"] = str(first)
    config["repo"]["mirrors"] = [str(m) for m in mirrors]
    node.config.write_text(yaml.safe_dump(config))


def status(node: Node) -> tuple[dict[str, object], str]:
    out, err = io.StringIO(), io.StringIO()
    main(["status", "-c", str(node.config), "--format", "json"], out, err)
    text = io.StringIO()
    main(["status", "-c", str(node.config)], text, io.StringIO())
    data: dict[str, object] = json.loads(out.getvalue())
    return data, text.getvalue()


def url_states(node: Node) -> dict[str, tuple[str, str | None]]:
    data, _ = status(node)
    urls = data["urls"]
    assert isinstance(urls, list)
    return {u["url"]: (u["state"], u["tip"]) for u in urls}


def installed_from(node: Node, hub: Hub) -> None:
    """The node has the hub's newest tip, exactly."""
    assert applied(node.state) == hub.tip
    assert node.files() == {p.name: p.read_bytes() for p in (hub.work / "hosts").iterdir()}


# --- M1, M3: a lagging or frozen first URL ----------------------------------------------------


def test_m1_first_url_older_than_applied_mirror_newer(hub: Hub, tmp_path: Path) -> None:
    old = frozen_copy(hub, tmp_path / "old.git")  # the example network only
    node = node_at(hub, tmp_path, str(hub.server))
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    assert node.sync()[0] == 0
    hub.change("add bravo", add_host("bravo", "2002:102:304:11::/64", 41))
    with hostile_git(old, "honest") as lagging, honest(hub) as mirror:
        with_urls(node, lagging, mirror)
        code, _, err = node.sync()
        assert code == 0, err
        installed_from(node, hub)
        states = url_states(node)
        assert states[mirror] == ("current", hub.tip)
        assert states[lagging][0] == "behind"
        _, text = status(node)
        assert f"{lagging} serves an older commit" in text and f"url:        {lagging} behind" in text
        # the next pass: nothing new, the lagging URL costs its refs request only
        code, out, err = node.sync()
        assert code == 0 and "already current" in out + err, out + err


@pytest.mark.parametrize("kind", ["git-daemon", "dumb-http"])
def test_m3_first_url_frozen_at_the_applied_tip(hub: Hub, tmp_path: Path, kind: str) -> None:
    """The mirror: a real `git daemon`, or the cheapest mirror there is,
    plain files over HTTP (with a password in its URL, which status never
    shows)."""
    serve = honest if kind == "git-daemon" else static_mirror
    node = node_at(hub, tmp_path, str(hub.server))
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    assert node.sync()[0] == 0
    frozen = frozen_copy(hub, tmp_path / "frozen.git")
    hub.change("add bravo", add_host("bravo", "2002:102:304:11::/64", 41))
    with hostile_git(frozen, "honest") as stuck, serve(hub) as served:
        mirror = served.replace("http://", "http://reader:s3cret@")
        with_urls(node, stuck, mirror)
        code, _, err = node.sync()
        assert code == 0, err
        installed_from(node, hub)
        shown = mirror.replace(":s3cret@", ":***@")
        assert url_states(node) == {stuck: ("behind", applied_before(hub)), shown: ("current", hub.tip)}
        assert "s3cret" not in json.dumps(status(node)[0]) + (node.state / "health.json").read_text()


def applied_before(hub: Hub) -> str:
    return git(hub.server, "rev-parse", "main~1")


# --- M2: a signed fork ---------------------------------------------------------------------------


def test_m2_first_url_serves_a_signed_fork(hub: Hub, tmp_path: Path) -> None:
    """The first URL serves an admin-signed commit of another line, forked
    below the applied commit: refused, the mirror's newer tip applied."""
    root = hub.tip
    node = node_at(hub, tmp_path, str(hub.server))
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    assert node.sync()[0] == 0
    fork = side_commit(hub, root, "old-wip", add_host("zulu", "2002:102:304:99::/64", 49))
    hub.change("add bravo", add_host("bravo", "2002:102:304:11::/64", 41))
    with hostile_git(hub.server, "substitute", tip=fork, source=hub.server) as forked, honest(hub) as mirror:
        with_urls(node, forked, mirror)
        for _ in range(2):  # and the next pass: the same, nothing from the fork
            code, out, err = node.sync()
            assert code == 0, err
            installed_from(node, hub)
            assert "zulu" not in node.files()
            assert url_states(node) == {forked: ("forked", fork), mirror: ("current", hub.tip)}
        assert f"{forked} offers {fork[:12]}" in out + err and "non-fast-forward" in out + err, out + err
        _, text = status(node)
        assert f"{forked} serves a commit of another line of history" in text
        # alone, the fork is refused as before (exit 1), naming nothing installed
        with_urls(node, forked)
        code, _, err = node.sync()
        assert code == 1 and "non-fast-forward" in err, err
        assert "zulu" not in node.files()


# --- a substituted branch --------------------------------------------------------------------


def test_a_substituted_branch_beside_the_honest_one_is_not_taken(hub: Hub, tmp_path: Path) -> None:
    """A server serves as main an admin-signed commit of ``wip``, forked
    from the applied tip; the honest mirror's main has more after it: the
    pass applies main and warns that the two lines diverge."""
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    wip = side_commit(hub, hub.tip, "wip", add_host("zulu", "2002:102:304:99::/64", 49))
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    hub.change("add bravo", add_host("bravo", "2002:102:304:11::/64", 41))
    with hostile_git(hub.server, "substitute", tip=wip, source=hub.server) as bad, honest(hub) as mirror:
        with_urls(node, bad, mirror)
        code, out, err = node.sync()
        assert code == 0, err
        installed_from(node, hub)
        assert "zulu" not in node.files()
        assert "neither containing the other" in out + err, out + err
        assert url_states(node)[bad] == ("forked", wip)


def test_a_node_given_a_substituted_branch_converges_without_an_operator(hub: Hub, tmp_path: Path) -> None:
    """The node applied ``wip``'s commit (the only URL it had served it as
    main); once the genuine main has more history after the commit both
    start from, the next pass takes it: no --allow-rewind.  It never goes
    back to the wip commit, nor to anything older."""
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    start = hub.tip
    wip = side_commit(hub, start, "wip", add_host("zulu", "2002:102:304:99::/64", 49))
    with hostile_git(hub.server, "substitute", tip=wip, source=hub.server) as bad:
        with_urls(node, bad)
        assert node.sync()[0] == 0
        assert applied(node.state) == wip and "zulu" in node.files()
        first = hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
        with honest(hub) as mirror:
            with_urls(node, bad, mirror)
            # main has as much after the common commit as wip: not yet
            code, _, err = node.sync()
            assert code == 0, err
            assert applied(node.state) == wip
            assert url_states(node)[mirror] == ("forked", first)
            hub.change("add bravo", add_host("bravo", "2002:102:304:11::/64", 41))
            code, _, err = node.sync()
            assert code == 0, err
            installed_from(node, hub)
            assert "zulu" not in node.files()
            assert url_states(node) == {bad: ("forked", wip), mirror: ("current", hub.tip)}
            # the wip commit alone again: refused, never re-applied
            with_urls(node, bad)
            code, _, err = node.sync()
            assert code == 1 and "non-fast-forward" in err, err
            installed_from(node, hub)
    # and rollback stays impossible: the commit both lines start from
    git(hub.server, "update-ref", "refs/heads/main", start)
    with_urls(node, str(hub.server))
    code, _, err = node.sync()
    assert code == 1 and "non-fast-forward" in err, err


def test_two_signed_lines_are_chosen_by_a_fixed_rule(hub: Hub, tmp_path: Path) -> None:
    """Two tips after the applied commit, neither containing the other, as
    long: the later committer date wins, whichever URL comes first."""
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    base, now = hub.tip, int(time.time())
    older = side_commit(hub, base, "one", add_host("alpha", "2002:102:304:10::/64", 40), f"@{now + 60} +0000")
    newer = side_commit(hub, base, "two", add_host("bravo", "2002:102:304:11::/64", 41), f"@{now + 120} +0000")
    with (
        hostile_git(hub.server, "substitute", tip=older, source=hub.server) as one,
        hostile_git(hub.server, "substitute", tip=newer, source=hub.server) as two,
    ):
        for first, second in ((one, two), (two, one)):
            twin = node_at(hub, tmp_path, str(hub.server), name=f"twin-{first.split(':')[-1].split('/')[0]}")
            assert twin.sync()[0] == 0
            with_urls(twin, first, second)
            code, out, err = twin.sync()
            assert code == 0, err
            assert applied(twin.state) == newer
            assert "neither containing the other" in out + err and "later committer date" in out + err
            assert url_states(twin)[one] == ("forked", older)


# --- an empty pack beside an honest mirror -----------------------------------------------------


def test_an_empty_pack_costs_only_that_url(hub: Hub, tmp_path: Path) -> None:
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    tip = hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    with hostile_git(hub.server, "phantom", tip=tip) as empty, honest(hub) as mirror:
        with_urls(node, empty, mirror)
        code, _, err = node.sync()
        assert code == 0, err
        installed_from(node, hub)
        states = url_states(node)
        assert states == {empty: ("failing", None), mirror: ("current", tip)}
        _, text = status(node)
        assert f"{empty} offered no tip" in text and "does not hold it" in text
        metrics_ok(node, empty)


def metrics_ok(node: Node, bad: str) -> None:
    from syncd.node.metrics import render
    from syncd.node.state import load_health, load_state

    text = render("inet6", load_state(node.state), load_health(node.state))
    assert f'url="{bad}",state="failing"' in text


# --- a pack built to exhaust memory ---------------------------------------------------------------


def test_a_delta_bomb_costs_one_failed_fetch_and_bounded_memory(hub: Hub, tmp_path: Path) -> None:
    """A few KiB of pack whose chained deltas would hold 32 x 16 MiB while
    indexed: the fetch child stops at its memory budget (256 MiB here), the
    pass fails as transient naming the URL, nothing is installed, and the
    honest server converges the next pass."""
    node = node_at(hub, tmp_path, str(hub.server), repo__max_fetch_bytes="32MiB")
    assert node.sync()[0] == 0
    tip = hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    frozen = Frozen(node)
    with hostile_git(hub.server, "deltabomb", size=16 << 20, levels=32) as url:
        with_urls(node, url)
        code, _, err = node.sync()
    assert code == 3, err
    assert url in err and "256 MiB of memory" in err, err
    assert health(node)["last_error_reason"] == "fetch-failed"
    frozen.assert_unchanged()
    with honest(hub) as mirror:
        with_urls(node, mirror)
        code, _, err = node.sync()
    assert code == 0, err
    assert applied(node.state) == tip
