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
