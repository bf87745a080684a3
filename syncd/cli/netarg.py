"""The node's config on the command line: ``-c CONFIG``, or its shorthand,
a positional ``NET`` (``/etc/syncd/NET.yaml``, ``$SYNCD_CONFIG_DIR``
replacing ``/etc/syncd``)."""

from __future__ import annotations

import argparse
import os

from syncd.errors import UsageError


def config_option(parser: argparse.ArgumentParser) -> None:
    """``-c CONFIG`` or its shorthand, a positional ``NET``: exactly one.

    Both land in ``args.config``.  Neither given leaves a placeholder that
    raises the usage error when the command opens it: argparse calls the
    actions in command-line order, so only the use can tell "missing"."""
    parser.add_argument(
        "-c", "--config", action=_ConfigAction, default=_NoConfig(), metavar="CONFIG", help="the node's config file"
    )
    parser.add_argument(
        "net",
        nargs="?",
        action=_NetAction,
        metavar="NET",
        help="short for -c /etc/syncd/NET.yaml ($SYNCD_CONFIG_DIR replaces /etc/syncd)",
    )


_CONFIG_USAGE = "give the node's config as -c CONFIG or as NET, not both"


class _NoConfig(os.PathLike[str]):
    def __fspath__(self) -> str:
        from syncd.node.config import config_dir

        raise UsageError(f"which network? give -c CONFIG, or NET (short for -c {config_dir()}/NET.yaml)")

    def __repr__(self) -> str:
        return "<no config given>"


class _ConfigAction(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: object, _: object = None
    ) -> None:
        if getattr(ns, "net", None) is not None:
            parser.error(_CONFIG_USAGE)
        ns.config = values


class _NetAction(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: object, _: object = None
    ) -> None:
        if values is None:
            return  # argparse calls a "?" positional even when it is absent
        from syncd.node.config import config_path

        if not isinstance(ns.config, _NoConfig):
            parser.error(_CONFIG_USAGE)
        try:
            ns.config = str(config_path(str(values)))
        except UsageError as exc:
            parser.error(exc.message)
        ns.net = values
