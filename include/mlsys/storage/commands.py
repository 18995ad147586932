"""``mlsys datasets``: what the store holds, how it got there, and what a reference resolves to.

    mlsys datasets list [--json]                every dataset and snapshot series, with its pointers
    mlsys datasets history NAME [--json]        every version (sequence, the run that wrote it) and
                                                every pointer move (from, to, writer, time)
    mlsys datasets show NAME@REF [--json]       REF: a version id, latest (the default), validated,
                                                or a snapshot id (the member version of NAME in it)

NAME may also be a snapshot series, e.g. ``comments``: ``show comments@latest`` shows the
newest ingest snapshot and its splits, ``history comments`` every snapshot. ``--storage-uri``
reads another root than ``$MLSYS_STORAGE_URI``. Errors print ``mlsys datasets: <message>``
and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mlsys.errors import MlsysError, StorageError
from mlsys.storage.dataset import DatasetRef, DatasetStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    common.add_argument("--storage-uri", default=None, help="the storage root (default: $MLSYS_STORAGE_URI)")
    sub = parser.add_subparsers(dest="datasets_command", required=True, metavar="ACTION")
    sub.add_parser("list", parents=[common], help="every dataset and snapshot series, with its pointers")
    history = sub.add_parser("history", parents=[common], help="every version and every pointer move of NAME")
    history.add_argument("name", metavar="NAME")
    show = sub.add_parser("show", parents=[common], help="one version: NAME@REF, REF = version, latest, "
                                                         "validated or a snapshot id")
    show.add_argument("ref", metavar="NAME@REF")


def run(args: argparse.Namespace) -> int:
    try:
        store = DatasetStore(args.storage_uri or None)
        data, text = ACTIONS[args.datasets_command](store, args)
    except MlsysError as exc:
        print(f"mlsys datasets: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(data, indent=2, default=str) if args.json else text)
    return 0


def _writer(created_by: dict[str, Any]) -> str:
    return str(created_by.get("mlflow_run_id") or created_by.get("writer") or
               ", ".join(f"{k}={v}" for k, v in created_by.items() if v) or "-")


def _short(pointer: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"version": pointer["version"], "sequence": pointer["sequence"]} if pointer else None


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [["-" if v is None or v == "" else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _kind(store: DatasetStore, name: str) -> str:
    if store.versions(name):
        return "dataset"
    if name in store.snapshot_names():
        return "snapshot"
    raise StorageError(f"no dataset or snapshot series {name!r} under {store.root_uri}; "
                       f"datasets: {store.names() or 'none'}, snapshot series: {store.snapshot_names() or 'none'}")


def list_(store: DatasetStore, args) -> tuple[dict, str]:
    datasets = []
    for name in store.names():
        versions = store.versions(name)
        if versions:
            pointers = store.pointers(name)
            datasets.append({"name": name, "versions": len(versions),
                             "pointers": {p: _short(rec) for p, rec in sorted(pointers.items())}})
    series = []
    for name in store.snapshot_names():
        latest = store.snapshot_pointers(name).get("latest")
        series.append({"name": name, "snapshots": len(store.snapshots(name)), "latest": _short(latest)})
    rows = [[d["name"], d["versions"]] + [f"{p['version']} ({p['sequence']})" if (p := d["pointers"].get(k)) else "-"
                                         for k in ("latest", "validated")] for d in datasets]
    text = f"datasets under {store.root_uri}\n" + _table(rows, ["NAME", "VERSIONS", "LATEST (SEQ)", "VALIDATED (SEQ)"])
    if series:
        rows = [[s["name"], s["snapshots"], f"{s['latest']['version']} ({s['latest']['sequence']})" if s["latest"] else "-"]
                for s in series]
        text += "\n\nsnapshot series\n" + _table(rows, ["NAME", "SNAPSHOTS", "LATEST (SEQ)"])
    return {"root": store.root_uri, "datasets": datasets, "snapshot_series": series}, text


def history(store: DatasetStore, args) -> tuple[dict, str]:
    name = args.name
    kind = _kind(store, name)
    if kind == "dataset":
        pointers, moves = store.pointers(name), store.history(name)
        versions = [{"sequence": r.sequence, "version": r.version, "rows": r.rows, "created_at": r.created_at,
                     "written_by": _writer(r.created_by), "snapshot": r.snapshot or None,
                     "pointers": sorted(p for p, rec in pointers.items() if rec["version"] == r.version)}
                    for r in store.versions(name)]
        rows = [[v["sequence"], v["version"], v["rows"], v["created_at"][:19], v["written_by"], ", ".join(v["pointers"])]
                for v in versions]
        table = _table(rows, ["SEQ", "VERSION", "ROWS", "CREATED", "WRITTEN BY", "POINTERS"])
    else:
        pointers, moves = store.snapshot_pointers(name), store.snapshot_history(name)
        versions = [{"sequence": s.sequence, "version": s.id, "members": s.members, "created_at": s.created_at,
                     "written_by": _writer(s.created_by),
                     "pointers": sorted(p for p, rec in pointers.items() if rec["version"] == s.id)}
                    for s in store.snapshots(name)]
        rows = [[v["sequence"], v["version"], v["created_at"][:19], v["written_by"], ", ".join(v["pointers"]),
                 " ".join(f"{k}@{ver}" for k, ver in sorted(v["members"].items()))] for v in versions]
        table = _table(rows, ["SEQ", "SNAPSHOT", "CREATED", "WRITTEN BY", "POINTERS", "MEMBERS"])
    move_rows = [[m["sequence"], m["pointer"], f"{m.get('from_version') or '(none)'} -> {m['version']}",
                  m.get("writer", "-") + (f" [{m['airflow']}]" if m.get("airflow") else ""), m.get("at", "")[:19]]
                 for m in moves]
    text = (f"{kind} {name}: {len(versions)} versions, {len(moves)} pointer moves\n{table}\n\npointer moves\n"
            + _table(move_rows, ["SEQ", "POINTER", "FROM -> TO", "WRITER", "AT"]))
    return {"name": name, "kind": kind, "versions": versions, "moves": moves}, text


def show(store: DatasetStore, args) -> tuple[dict, str]:
    name, _, ref = args.ref.partition("@")
    ref = ref or "latest"
    if _kind(store, name) == "dataset":
        found: DatasetRef = store.ref(name, ref)
        pointers = sorted(p for p, rec in store.pointers(name).items() if rec["version"] == found.version)
        try:
            snapshot = store.snapshot_of(name, found.version).id
        except StorageError:
            snapshot = None
        data = {"kind": "dataset", **found.to_json(), "pointers": pointers, "snapshot_of": snapshot}
        lines = [f"{found.label}  (sequence {found.sequence}; pointers: {', '.join(pointers) or 'none'})",
                 f"rows {found.rows}, {found.size_bytes} bytes, sha256 {found.sha256}", f"uri {found.uri}",
                 f"created {found.created_at} by {_writer(found.created_by)}",
                 f"sources {json.dumps(found.sources)}", f"snapshot {snapshot or '-'}",
                 "columns " + ", ".join(f"{c['name']}:{c['type']}" for c in found.columns)]
        return data, "\n".join(lines)
    snap = store.snapshot(f"{name}@{ref}")
    pointers = sorted(p for p, rec in store.snapshot_pointers(name).items() if rec["version"] == snap.id)
    members = {m: store.ref(m, v) for m, v in sorted(snap.members.items())}
    data = {"kind": "snapshot", **snap.to_json(), "pointers": pointers,
            "datasets": {m: {"version": r.version, "sequence": r.sequence, "rows": r.rows, "uri": r.uri}
                         for m, r in members.items()}}
    lines = [f"{snap.label}  (sequence {snap.sequence}; pointers: {', '.join(pointers) or 'none'})",
             f"created {snap.created_at} by {_writer(snap.created_by)}"]
    lines += [f"  {m}@{r.version}  rows {r.rows}  sequence {r.sequence}" for m, r in members.items()]
    return data, "\n".join(lines)


ACTIONS = {"list": list_, "history": history, "show": show}
