"""Logging set-up: one line per event to stderr, ``flow<N>:`` prefix, key=value fields."""

from __future__ import annotations

import logging
import sys
import time

LOGGER_NAME = "fyntr"
log = logging.getLogger(LOGGER_NAME)


class _Formatter(logging.Formatter):
    """``[2026-07-05T12:00:00Z INFO  fyntr] message``: env_logger's shape, UTC, WARN."""

    def format(self, record: logging.LogRecord) -> str:
        level = "WARN" if record.levelno == logging.WARNING else record.levelname
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        return f"[{stamp} {level:<5} {record.name}] {record.getMessage()}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


def format_bytes(n: float) -> str:
    """Decimal units as docs/original.md §3.5: ``2.00 KB``, ``512 B``."""
    for factor, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= factor:
            return f"{n / factor:.2f} {unit}"
    return f"{int(n)} B"
