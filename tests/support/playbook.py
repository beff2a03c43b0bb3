"""mitmproxy's Playbook for fyntr's pure machines: the events fed in and the commands
expected after each, written as one transcript; a mismatch fails with the transcript
and a diff of what was expected against what came.

    assert Playbook(machine) >> Data(b"...") << Arm(7) >> Eof() << Close()

``Playbook(machine, start=True)`` begins with ``machine.start()``'s commands (write them
first with ``<<``). ``Like(Connect)`` stands for any command of that type, for commands
that carry objects without equality (an ``Upstream``).
"""

from __future__ import annotations

import difflib
from typing import Any, Protocol, cast


class Machine(Protocol):
    def handle(self, event: Any) -> list[Any]: ...


class Startable(Machine, Protocol):
    def start(self) -> list[Any]: ...


class Like:
    """Any command of ``kind``."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        return isinstance(other, self.kind)

    def __hash__(self) -> int:
        return hash(self.kind)

    def __repr__(self) -> str:
        return f"{self.kind.__name__}(...)"


class Playbook:
    def __init__(self, machine: Machine, *, start: bool = False) -> None:
        self.machine = machine
        self.steps: list[tuple[Any, list[Any]]] = [(None, [])] if start else []

    def __rshift__(self, event: Any) -> Playbook:
        """An event fed in."""
        self.steps.append((event, []))
        return self

    def __lshift__(self, command: Any) -> Playbook:
        """A command expected from the last event (or from start)."""
        assert self.steps, "an event (>>), or start=True, comes before its commands (<<)"
        self.steps[-1][1].append(command)
        return self

    def __bool__(self) -> bool:
        expected: list[str] = []
        actual: list[str] = []
        for event, commands in self.steps:
            if event is None:
                got = cast(Startable, self.machine).start()
            else:
                got = self.machine.handle(event)
            line = "start()" if event is None else f">> {event!r}"
            expected += [line, *(f"   << {c!r}" for c in commands)]
            actual += [line, *(f"   << {c!r}" for c in got)]
            if got != commands:
                diff = "\n".join(
                    difflib.unified_diff(expected, actual, "expected", "actual", lineterm="")
                )
                raise AssertionError(f"the playbook went another way:\n{diff}")
        return True
