from __future__ import annotations

import pytest

from syncd.tinc.names import is_node_name, is_script_name, script_suffix


@pytest.mark.parametrize("name", ["a", "node_1", "A" * 64, "0"])
def test_valid_node_names(name: str) -> None:
    assert is_node_name(name)


@pytest.mark.parametrize("name", ["", "foo-bar", "foo bar", "é1", "A" * 65, "a\n", ".gitkeep"])
def test_invalid_node_names(name: str) -> None:
    assert not is_node_name(name)


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("gw-up", "-up"), ("gw-down", "-down"), ("a_b-up", "-up"), ("-up", None), ("a-b-up", None), ("gw-upx", None)],
)
def test_script_names(name: str, suffix: str | None) -> None:
    assert script_suffix(name) == suffix
    assert is_script_name(name) is (suffix is not None)
