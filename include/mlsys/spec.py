"""Helpers shared by the frozen stage specs: validation with useful messages, JSON round trips."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from mlsys.errors import SpecError

T = TypeVar("T")


def require(ok: bool, spec: str, field: str, value: Any, fix: str) -> None:
    """Raise SpecError naming the spec, the field, the offending value and how to fix it."""
    if not ok:
        raise SpecError(f"{spec}.{field}={value!r} is invalid: {fix}")


def from_params(cls: type[T], params: dict[str, Any]) -> T:
    """Build a spec from a dict (trigger params, CLI args), ignoring None values and unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in params.items() if k in names and v is not None})


def knob(default: Any, help: str, **schema: Any) -> Any:
    """A spec field that users turn: its default, what it does, and its JSON-schema bounds or enum.

    The one source of a field's form: the DAGs' trigger forms (``mlsys.orchestration.form``) and the CLI's
    ``--help`` are generated from it, and ``check_knobs`` enforces the same bounds when the spec is built.
    Schema keys: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``enum``.
    """
    unknown = set(schema) - set(_RULES)
    if unknown:
        raise TypeError(f"knob(): unknown schema keys {sorted(unknown)}; use {sorted(_RULES)}")
    return dataclasses.field(default=default, metadata={"help": help, "schema": schema})


_RULES = {
    "enum": (lambda v, b: v in b, lambda b: f"use one of {list(b)}"),
    "minimum": (lambda v, b: v >= b, lambda b: f"use {b} or more"),
    "maximum": (lambda v, b: v <= b, lambda b: f"use at most {b}"),
    "exclusiveMinimum": (lambda v, b: v > b, lambda b: f"use a value above {b}"),
    "exclusiveMaximum": (lambda v, b: v < b, lambda b: f"use a value below {b}"),
}


def check_knobs(spec: Any) -> None:
    """Every knob's bounds and enum, checked with ``require`` (the trigger form checks the same in the browser)."""
    owner = type(spec).__name__
    for f in dataclasses.fields(spec):
        for key, bound in f.metadata.get("schema", {}).items():
            ok, fix = _RULES[key]
            value = getattr(spec, f.name)
            require(ok(value, bound), owner, f.name, value, fix(bound))


def knobs(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of a spec class that users turn (declared with ``knob``), by name."""
    return {f.name: f for f in dataclasses.fields(cls) if "help" in f.metadata}
