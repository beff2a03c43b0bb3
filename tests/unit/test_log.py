"""fyntr's log lines (fyntr/log.py): the hot path's ``line`` writes what ``log.log`` would,
and lines go out together, once per turn of the loop."""

from __future__ import annotations

import re
import subprocess
import sys

SCRIPT = """
import asyncio, logging
from fyntr.log import attach_loop, line, log, setup_logging
setup_logging("info")
line(logging.INFO, "flow%d: closed target=%s", 7, "example.com:443")
log.info("flow%d: closed target=%s", 7, "example.com:443")
line(logging.WARNING, "flow%d: 100%% refused", 8)
log.warning("flow%d: 100%% refused", 8)
line(logging.DEBUG, "not at info")
async def turn():
    attach_loop(asyncio.get_running_loop())
    line(logging.INFO, "batched %s", "a")
    log.info("batched %s", "b")
    await asyncio.sleep(0)
    attach_loop(None)
asyncio.run(turn())
"""


def test_line_writes_what_logging_would() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stderr
    lines = [re.sub(r"^\[\S+ ", "[STAMP ", x) for x in out.splitlines()]
    assert lines == [
        "[STAMP INFO  fyntr] flow7: closed target=example.com:443",
        "[STAMP INFO  fyntr] flow7: closed target=example.com:443",
        "[STAMP WARN  fyntr] flow8: 100% refused",
        "[STAMP WARN  fyntr] flow8: 100% refused",
        "[STAMP INFO  fyntr] batched a",
        "[STAMP INFO  fyntr] batched b",
    ]
