"""`syncd show --format html` in a real browser: Debian's chromium, headless.

The largest real network (retiolum) is rendered, every node in the table
and on the map; the filter is driven through the address (``#filter=``,
which the page's own script reads on load, as it reads the input box) and
the DOM the browser ends with is read back; the browser's console must
stay silent (chromium logs every console message, the page's own errors
and any load the page's Content-Security-Policy blocks, as ``CONSOLE``
lines).  A screenshot is written to build/test-artifacts/ for a person to
look at.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, lacking
from tests.test_show import show

ARTIFACTS = ROOT / "build" / "test-artifacts"


def chromium(page: Path, profile: Path, *args: str, fragment: str = "") -> tuple[str, list[str]]:
    """Run headless chromium on ``page``: its stdout, and the console lines
    it logged."""
    binary = shutil.which("chromium")
    if binary is None:
        lacking("chromium is not installed (apt-get install chromium)")
    command = [
        binary,
        "--headless",
        "--no-sandbox",  # as root, as CI runs
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.as_uri() + fragment,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout, [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


def rows_of(dom: str) -> dict[str, str]:
    """Each table row's node name → its opening tag, as the browser left it."""
    return {html.unescape(m[1]): m[0] for m in re.finditer(r'<tr[^>]* data-name="([^"]*)"[^>]*>', dom)}


def test_the_console_check_sees_an_error(tmp_path: Path) -> None:
    """The check below could fail: a page with a script error is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>no_such_function();</script></body></html>")
    _, console = chromium(page, tmp_path / "profile", "--dump-dom")
    assert any("Uncaught ReferenceError: no_such_function is not defined" in line for line in console), console


@pytest.mark.parametrize("words", ["", "ace", "rsa 4096"])
def test_the_largest_network_in_a_browser(corpora: Path, tmp_path: Path, words: str) -> None:
    repo = tmp_path / "retiolum"
    shutil.copytree(corpora / "retiolum" / "hosts", repo / "hosts")
    page = tmp_path / "retiolum.html"
    show(str(repo), "--format", "html", "-o", str(page))
    source = page.read_text()
    searched = {
        html.unescape(m[1]): html.unescape(m[2])
        for m in re.finditer(r'data-name="([^"]*)" data-search="([^"]*)"', source)
    }
    assert len(searched) == 235
    expected = {name for name, text in searched.items() if all(w in text for w in words.split())}
    assert 0 < len(expected) < 235 if words else len(expected) == 235

    fragment = "#filter=" + words.replace(" ", "%20") if words else ""
    dom, console = chromium(page, tmp_path / "profile", "--dump-dom", fragment=fragment)
    assert console == []
    assert 'data-ready="1"' in dom  # the script ran to its end
    assert re.search(r'<pre id="errors"></pre>', dom)
    rows = rows_of(dom)
    assert set(rows) == set(searched)  # every node, in the table
    assert set(re.findall(r'<g class="n[^"]*" data-name="([^"]*)"', dom)) == set(searched)  # and on the map
    shown = {name for name, tag in rows.items() if " hidden" not in tag}
    assert shown == expected
    assert f'<span id="shown">{len(expected)} of 235 nodes shown</span>' in dom
    dimmed = set(re.findall(r'<g class="n[^"]* off" data-name="([^"]*)"', dom))
    assert dimmed == set(searched) - expected


def first_keys(dom: str) -> list[tuple[str, int]]:
    """Each row's first key (``("rsa", 2048)``), in the order of the DOM."""
    keys = []
    for row in re.finditer(r"<tr[^>]* data-name=[^>]*>(.*?)</tr>", dom, re.S):
        cell = re.split(r"<td[^>]*>", row[1])[4]  # [0] is before the first cell; Keys is the fourth
        first = cell.split("<br>")[0].removesuffix("</td>").split()
        keys.append((first[0], int(first[1])) if first else ("", 0))  # no key at all: an empty cell
    return keys


def test_the_table_sorts(corpora: Path, tmp_path: Path) -> None:
    """The page's own sort, driven by ``#sort=N`` (as a click on column N
    does; ``-N`` clicks twice): by keys, ascending and descending."""
    repo = tmp_path / "retiolum"
    shutil.copytree(corpora / "retiolum" / "hosts", repo / "hosts")
    page = tmp_path / "retiolum.html"
    show(str(repo), "--format", "html", "-o", str(page))
    original = first_keys(page.read_text())
    assert original != sorted(original)  # by name, the keys are in no order
    for sort, arrow in (("3", "asc"), ("-3", "desc")):
        dom, console = chromium(page, tmp_path / "profile", "--dump-dom", fragment=f"#sort={sort}")
        assert console == [] and 'data-ready="1"' in dom
        assert f'<th class="{arrow}">Keys</th>' in dom
        keys = first_keys(dom)
        assert sorted(keys) == sorted(original)  # the same rows
        assert keys == sorted(keys, reverse=arrow == "desc")


def test_a_screenshot_of_the_page(corpora: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "retiolum"
    shutil.copytree(corpora / "retiolum" / "hosts", repo / "hosts")
    page = tmp_path / "retiolum.html"
    show(str(repo), "--format", "html", "-o", str(page))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "show-retiolum.png"
    shot.unlink(missing_ok=True)
    _, console = chromium(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400")
    assert console == []
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2400)
    with capsys.disabled():
        print(f"\nscreenshot of syncd show --format html (retiolum): {shot}")
