"""The one pattern every registry follows (stages, CLI commands, benchmarks): named entries that load lazily.

An entry names a module and the attributes to take from it; nothing is
imported until the entry is used, so listing a registry costs nothing (the CLI's
``--help`` and the DAG processor stay fast).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Iterable, TypeVar

from mlsys.errors import SpecError

E = TypeVar("E", bound="Entry")


@dataclass(frozen=True)
class Entry:
    name: str
    module: str
    help: str = ""

    def attr(self, name: str) -> Any:
        return getattr(importlib.import_module(self.module), name)


def index(entries: Iterable[E]) -> dict[str, E]:
    """Entries by name; a name given twice is a programming error."""
    out: dict[str, E] = {}
    for e in entries:
        if e.name in out:
            raise ValueError(f"{e.name!r} is registered twice ({out[e.name].module}, {e.module})")
        out[e.name] = e
    return out


def lookup(registry: dict[str, E], kind: str, name: str) -> E:
    if name not in registry:
        raise SpecError(f"unknown {kind} {name!r}; {kind}s are {sorted(registry)}")
    return registry[name]
