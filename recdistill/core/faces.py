"""Package faces: what an app offers the packages above it (the CLI, the demo, the benchmarks), by name.

An app's `__init__` names each public object and the room (module) it lives in; other packages import
from the app's front door (`from distill_worker import WorkerSettings`), never from its rooms, so a room
can be split or renamed without touching them (a test walks the import graph). Rooms load on first use,
as the CLI's commands did when they imported rooms inside each command: `import distill_worker` pulls in
neither torch nor a server.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_face(package: str, rooms: dict[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """(`__all__`, the module's `__getattr__`) for a package whose public names live in `rooms`: name ->
    its module under the package, or `module:attribute` where the public name differs. A public name is
    never a module's name: once that module is imported, the package attribute would be the module."""
    clashes = sorted(name for name in rooms if name in {room.split(":")[0].split(".")[0] for room in rooms.values()})
    if clashes:
        raise ValueError(f"{package}: public names {clashes} are also its modules' names")

    def attribute(name: str) -> Any:
        room = rooms.get(name)
        if room is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, inside = room.partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), inside or name)

    return sorted(rooms), attribute
