"""The command line as data, read from the argparse parser itself, so that the
man page and the shell completions can never disagree with ``--help``."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Option:
    """One argument: an option (``flags`` set) or a positional (``flags`` empty)."""

    flags: tuple[str, ...]
    metavar: str | None  # None: a switch that takes no value
    help: str
    choices: tuple[str, ...] = ()
    repeatable: bool = False
    optional: bool = True  # argparse marks positionals with nargs "?" or "*" not required

    @property
    def kind(self) -> str:
        """What a shell should offer for the value: words, dirs, files, nets, or nothing."""
        if self.choices:
            return "words"
        if self.metavar is not None and (self.metavar.endswith("DIR") or self.metavar == "REPO"):
            return "dirs"
        if self.metavar in ("CONFIG", "FILE"):
            return "files"
        if self.metavar == "NET":
            return "nets"
        return "none"


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    summary: str
    description: str
    usage: str
    options: tuple[Option, ...]

    @property
    def positionals(self) -> tuple[Option, ...]:
        return tuple(option for option in self.options if not option.flags)


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    description: str
    usage: str
    options: tuple[Option, ...]
    commands: tuple[Command, ...]


def describe(parser: argparse.ArgumentParser) -> Program:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands: list[Command] = []
    for action in subparsers:
        summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            commands.append(
                Command(
                    name=name,
                    summary=summaries.get(name, ""),
                    description=_text(sub.description, sub.prog),
                    usage=_usage(sub),
                    options=_options(sub),
                )
            )
    return Program(
        name=parser.prog,
        description=_text(parser.description, parser.prog),
        usage=_usage(parser),
        options=_options(parser),
        commands=tuple(commands),
    )


def _options(parser: argparse.ArgumentParser) -> tuple[Option, ...]:
    options: list[Option] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        choices = tuple(str(c) for c in action.choices) if action.choices is not None else ()
        takes_value = action.nargs != 0
        metavar: str | None = None
        if takes_value:
            if isinstance(action.metavar, str):
                metavar = action.metavar
            elif choices:
                metavar = "{" + ",".join(choices) + "}"
            else:
                metavar = action.dest.upper() if action.option_strings else action.dest
        options.append(
            Option(
                flags=tuple(action.option_strings),
                metavar=metavar,
                help=_help(action, parser.prog),
                choices=choices,
                repeatable=isinstance(action, argparse._AppendAction | argparse._CountAction),
                optional=not action.required,
            )
        )
    return tuple(options)


def _help(action: argparse.Action, prog: str) -> str:
    # argparse %-formats every help string (`%(default)s`); show what --help shows
    text = action.help or ""
    if "%" in text:
        values = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
        text = text % dict(values, prog=prog)
    return text


def _text(text: str | None, prog: str) -> str:
    # argparse formats a description only when it names %(prog)
    text = text or ""
    return text % {"prog": prog} if "%(prog)" in text else text


def _usage(parser: argparse.ArgumentParser) -> str:
    usage = parser.format_usage().strip()
    return re.sub(r"\s+", " ", usage.removeprefix("usage:")).strip()
