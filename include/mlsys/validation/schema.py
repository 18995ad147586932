"""A dataset schema as a small, diffable YAML file, compiled to a GX ExpectationSuite.

    dataset: comments_labeled
    min_rows: 100
    columns:
      label: {type: int, required: true, domain: [-1, 0, 1]}
      weight: {type: float, min: 0.0, max: 1.0}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsys.errors import SpecError

SCHEMA_DIR = Path(__file__).parent / "schemas"
TYPES = {"string", "int", "float", "bool", "list"}
# Names GX accepts for each schema type: column dtypes, or per-value type names for object columns.
# (String columns are checked as object columns: GX 1.24 does not recognise pandas 3's StringDtype.)
TYPE_NAMES = {
    "string": ["str"],
    "int": ["int64", "int32", "int16", "int8", "Int64", "int"],
    "float": ["float64", "float32", "Float64", "float"],
    "bool": ["bool", "boolean"],
}
KEYS = {"type", "required", "unique", "domain", "min", "max", "min_length", "max_length"}


@dataclass(frozen=True)
class Schema:
    dataset: str
    columns: dict[str, dict[str, Any]]
    min_rows: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name, col in self.columns.items():
            unknown = set(col) - KEYS
            if unknown:
                raise SpecError(f"schema {self.dataset}: column {name!r} has unknown keys {sorted(unknown)}; allowed {sorted(KEYS)}")
            if col.get("type", "string") not in TYPES:
                raise SpecError(f"schema {self.dataset}: column {name!r} type {col.get('type')!r} is not one of {sorted(TYPES)}")

    @classmethod
    def load(cls, path_or_name: str | Path) -> "Schema":
        import yaml

        path = Path(path_or_name)
        if not path.suffix:
            path = SCHEMA_DIR / f"{path_or_name}.yaml"
        if not path.is_file():
            raise SpecError(f"schema file {path} not found; pass a YAML path or one of {[p.stem for p in SCHEMA_DIR.glob('*.yaml')]}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SpecError(f"schema file {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict) or "dataset" not in raw:
            raise SpecError(f"schema file {path} must be a mapping with a 'dataset' key (and 'columns'); got {raw!r:.200}")
        return cls(dataset=raw["dataset"], columns=raw.get("columns") or {}, min_rows=int(raw.get("min_rows", 1)))

    def to_suite(self):
        """Compile to a GX ExpectationSuite: one expectation per rule."""
        import great_expectations as gx
        import great_expectations.expectations as gxe

        exps: list = [gxe.ExpectTableRowCountToBeBetween(min_value=self.min_rows)]
        for name, col in self.columns.items():
            exps.append(gxe.ExpectColumnToExist(column=name))
            kind = col.get("type", "string")
            if kind in TYPE_NAMES:
                exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=TYPE_NAMES[kind]))
            if col.get("required", True):
                exps.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
            if col.get("unique"):
                exps.append(gxe.ExpectColumnValuesToBeUnique(column=name))
            if "domain" in col:
                exps.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(col["domain"])))
            if "min" in col or "max" in col:
                exps.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=col.get("min"), max_value=col.get("max")))
            if "min_length" in col or "max_length" in col:
                exps.append(
                    gxe.ExpectColumnValueLengthsToBeBetween(column=name, min_value=col.get("min_length"), max_value=col.get("max_length"))
                )
        # Passing the expectations to the constructor needs no GX data context (add_expectation does).
        return gx.ExpectationSuite(name=f"{self.dataset}_schema", expectations=exps)
