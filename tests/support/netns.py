"""For the tests that build network namespaces: they run as root with iproute2 (as CI
does here) and skip with the reason elsewhere."""

from __future__ import annotations

import os
import shutil

import pytest


def needs_netns(*commands: str) -> list[pytest.MarkDecorator]:
    """Skip markers: root, ``ip``, and each of ``commands``."""
    missing = [c for c in ("ip", *commands) if shutil.which(c) is None]
    return [
        pytest.mark.skipif(
            os.name != "posix" or os.geteuid() != 0,
            reason="needs root to make network namespaces (ip netns)",
        ),
        pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}"),
    ]
