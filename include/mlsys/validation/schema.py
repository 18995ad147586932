"""A dataset schema as a small, diffable, versioned YAML file, compiled to a GX ExpectationSuite.

    format: 1                 # the schema file format (this module reads format 1)
    dataset: chicago_taxi
    version: 3                # bumped by every accepted change; history keeps each version
    min_rows: 1000
    label: tips               # required in the training environment, absent in serving
    columns:
      fare: {type: float, required: true, min: 0.0, max: 700.07, drift: 0.1, skew: 0.1}
      company: {type: string, required: false, min_presence: 0.6, domain: [...]}

Column keys: ``type``; ``required`` (no missing value at all) or ``min_presence``
(the least share of rows with a value); ``unique``; ``domain``; ``min``/``max``;
``min_length``/``max_length``; ``drift`` and ``skew``: the largest distance
allowed against the previous span and against the training data (L-infinity
for categorical columns, Jensen-Shannon divergence for numbers); ``closed: true``
makes the domain and range strict: a rare new value or a slightly wider range is
then an error, never a benign change (for labels and other enumerations).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsys.errors import SpecError

SCHEMA_DIR = Path(__file__).parent / "schemas"
FORMAT = 1
TYPES = {"string", "int", "float", "bool", "list", "timestamp"}
ENVIRONMENTS = ("training", "serving")
# Names GX accepts for each schema type: column dtypes, or per-value type names for object columns.
# (String columns are checked as object columns: GX 1.24 does not recognise pandas 3's StringDtype.)
TYPE_NAMES = {
    "string": ["str"],
    "int": ["int64", "int32", "int16", "int8", "Int64Dtype", "int"],  # GX finds pandas' nullable types by class name
    "float": ["float64", "float32", "Float64Dtype", "float"],
    "bool": ["bool", "BooleanDtype"],
}
KEYS = {"type", "required", "unique", "domain", "min", "max", "min_length", "max_length",
        "min_presence", "drift", "skew", "closed"}
TOP_KEYS = {"format", "dataset", "version", "min_rows", "label", "columns", "description"}


@dataclass(frozen=True)
class Schema:
    dataset: str
    columns: dict[str, dict[str, Any]]
    min_rows: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    label: str = ""
    description: str = ""

    def __post_init__(self):
        where = f"schema {self.dataset}"
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise SpecError(f"{where}: version {self.version!r} must be a whole number >= 1")
        if not isinstance(self.min_rows, int) or self.min_rows < 0:
            raise SpecError(f"{where}: min_rows {self.min_rows!r} must be a whole number >= 0")
        if not isinstance(self.columns, dict):
            raise SpecError(f"{where}: columns must be a mapping of column name -> rules; got {self.columns!r:.100}")
        if self.label and self.label not in self.columns:
            raise SpecError(f"{where}: label {self.label!r} is not one of its columns {sorted(self.columns)}")
        for name, col in self.columns.items():
            if not isinstance(col, dict):
                raise SpecError(f"{where}: column {name!r} must map rule -> value (e.g. {{type: int}}); got {col!r:.100}")
            unknown = set(col) - KEYS
            if unknown:
                raise SpecError(f"{where}: column {name!r} has unknown keys {sorted(unknown)}; allowed {sorted(KEYS)}")
            if col.get("type", "string") not in TYPES:
                raise SpecError(f"{where}: column {name!r} type {col.get('type')!r} is not one of {sorted(TYPES)}")
            for key in ("min_presence", "drift", "skew"):
                value = col.get(key)
                if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
                    raise SpecError(f"{where}: column {name!r} {key}={value!r} must be a number between 0 and 1")
            if "domain" in col and not isinstance(col["domain"], list):
                raise SpecError(f"{where}: column {name!r} domain must be a list of values; got {col['domain']!r:.100}")
            if col.get("min") is not None and col.get("max") is not None and col["min"] > col["max"]:
                raise SpecError(f"{where}: column {name!r} min {col['min']!r} is above max {col['max']!r}")

    # -- rules ----------------------------------------------------------------
    def min_presence(self, name: str) -> float:
        """The least share of rows that must have a value: 1.0 when required."""
        col = self.columns[name]
        if col.get("required", "min_presence" not in col):
            return 1.0
        return float(col.get("min_presence", 0.0))

    def expected_columns(self, environment: str = "training") -> list[str]:
        """The columns data must have: all of them in training, all but the label in serving."""
        check_environment(environment)
        return [c for c in self.columns if not (environment == "serving" and c == self.label)]

    # -- files ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "dataset": self.dataset, "version": self.version}
        if self.description:
            out["description"] = self.description
        out["min_rows"] = self.min_rows
        if self.label:
            out["label"] = self.label
        out["columns"] = self.columns
        return out

    def to_yaml(self) -> str:
        import yaml

        head = yaml.safe_dump({k: v for k, v in self.to_dict().items() if k != "columns"}, sort_keys=False)
        # One line per column: a schema change is a one-line diff.
        lines = [f"  {yaml.safe_dump({name: None}).split(':')[0]}: "
                 f"{yaml.safe_dump(col, default_flow_style=True, sort_keys=False, width=1 << 20).strip()}"
                 for name, col in self.columns.items()]
        return head + "columns:\n" + "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path

    def with_changes(self, **changes: Any) -> "Schema":
        data = {"dataset": self.dataset, "columns": self.columns, "min_rows": self.min_rows, "version": self.version,
                "label": self.label, "description": self.description}
        return Schema(**{**data, **changes})

    def diff(self, other: "Schema", name: str = "schema") -> str:
        """A unified diff from this schema to ``other``."""
        return "".join(difflib.unified_diff(
            self.to_yaml().splitlines(keepends=True), other.to_yaml().splitlines(keepends=True),
            fromfile=f"{name} v{self.version}", tofile=f"{name} v{other.version}"))

    @classmethod
    def parse(cls, text: str, where: str = "schema") -> "Schema":
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"schema file {where} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict) or "dataset" not in raw:
            raise SpecError(f"schema file {where} must be a mapping with a 'dataset' key (and 'columns'); got {raw!r:.200}")
        fmt = raw.get("format", FORMAT)
        if fmt != FORMAT:
            raise SpecError(f"schema file {where} has format {fmt!r}, but this mlsys reads format {FORMAT}; "
                            "convert the file or use the mlsys version that wrote it")
        unknown = set(raw) - TOP_KEYS
        if unknown:
            raise SpecError(f"schema file {where} has unknown top-level keys {sorted(unknown)}; allowed {sorted(TOP_KEYS)}")
        try:
            version = raw.get("version", 1)
            min_rows = raw.get("min_rows", 1)
            return cls(dataset=str(raw["dataset"]), columns=raw.get("columns") or {},
                       min_rows=int(min_rows) if isinstance(min_rows, (int, float)) else min_rows,
                       version=version, label=raw.get("label") or "", description=raw.get("description") or "")
        except SpecError as exc:
            raise SpecError(f"schema file {where}: {exc}") from exc

    @classmethod
    def load(cls, path_or_name: str | Path) -> "Schema":
        path = resolve(path_or_name)
        return cls.parse(path.read_text(), str(path))

    # -- GX -----------------------------------------------------------------------
    def to_suite(self, environment: str = "training"):
        """Compile to a GX ExpectationSuite: one expectation per rule.

        In the serving environment the label column is left out: serving data has no label.
        """
        import great_expectations as gx
        import great_expectations.expectations as gxe

        exps: list = [gxe.ExpectTableRowCountToBeBetween(min_value=self.min_rows)]
        for name in self.expected_columns(environment):
            col = self.columns[name]
            exps.append(gxe.ExpectColumnToExist(column=name))
            kind = col.get("type", "string")
            if kind in TYPE_NAMES:
                exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=TYPE_NAMES[kind]))
            presence = self.min_presence(name)
            if presence >= 1.0:
                exps.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
            elif presence > 0.0:
                exps.append(gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=presence))
            if col.get("unique"):
                exps.append(gxe.ExpectColumnValuesToBeUnique(column=name))
            if "domain" in col:
                exps.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(col["domain"])))
            if col.get("min") is not None or col.get("max") is not None:
                exps.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=col.get("min"), max_value=col.get("max")))
            if "min_length" in col or "max_length" in col:
                exps.append(
                    gxe.ExpectColumnValueLengthsToBeBetween(column=name, min_value=col.get("min_length"), max_value=col.get("max_length"))
                )
        # Passing the expectations to the constructor needs no GX data context (add_expectation does).
        return gx.ExpectationSuite(name=f"{self.dataset}_schema", expectations=exps)


def resolve(path_or_name: str | Path) -> Path:
    """A schema file: a path, or the name of a shipped schema."""
    path = Path(path_or_name)
    if not path.suffix:
        path = SCHEMA_DIR / f"{path_or_name}.yaml"
    if not path.is_file():
        raise SpecError(f"schema file {path} not found; pass a YAML path or one of {[p.stem for p in SCHEMA_DIR.glob('*.yaml')]}")
    return path


def check_environment(environment: str) -> str:
    if environment not in ENVIRONMENTS:
        raise SpecError(f"environment {environment!r} is not one of {list(ENVIRONMENTS)}")
    return environment
