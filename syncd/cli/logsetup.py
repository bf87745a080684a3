"""structlog set-up: what syncd says about its passes.

Off a terminal (under systemd, in the journal) every event is one JSON
object on one line, prefixed with its journald priority (``<6>{...}``, see
sd-daemon(3)), so ``journalctl -p warning`` filters syncd's own lines.  On a
terminal it is a readable console line.  Event names are stable
(``sync.applied``, ``sync.unchanged``, ``sync.refused``, ``sync.failed``,
``reload.done``, ``reload.failed``, ``drift.repaired``, ``tinc.key_learned``, ...).  Exceptions are
logged as their message and reason only: no tracebacks, never with locals.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


def _journald_json(_logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
    priority = PRIORITIES.get(event.get("level", method), 6)
    return f"<{priority}>" + json.dumps(event, default=str, separators=(",", ":"), sort_keys=False)


def setup_logging(stream: TextIO | None = None, *, json_lines: bool | None = None, level: str = "info") -> None:
    stream = stream if stream is not None else sys.stderr
    if json_lines is None:
        json_lines = not stream.isatty()
    renderer: Any = _journald_json if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    return structlog.get_logger("syncd")
