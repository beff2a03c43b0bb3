"""Coroutine tests run on uvloop (what production uses) or, with FYNTR_TEST_LOOP=asyncio,
on the standard loop. No plugin: a coroutine test function is simply run to completion."""

from __future__ import annotations

import asyncio
import inspect
import os
from typing import Any

import pytest
from hypothesis import settings

# The test command draws the same examples on every run (derandomize): a property that
# fails, fails for the change that broke it, not for the seed of the run. The controller
# properties sit near their bounds on a few corners (docs/zero-configuration.md); with
# HYPOTHESIS_PROFILE=explore new examples are drawn (CONTRIBUTING.md).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def _runner() -> Any:
    if os.environ.get("FYNTR_TEST_LOOP") == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    _runner()(pyfuncitem.obj(**kwargs))
    return True
