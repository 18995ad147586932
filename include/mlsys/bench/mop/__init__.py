"""``mlsys bench mop``: Cerebro's model hopper parallelism vs task parallelism vs DDP per configuration.

    mlsys bench mop [--configs 8] [--workers 2] [--epochs 2] [--repeats 3] [--num-buckets 16384] [--batch 32]

The workload: the text classifier (``select_mop.recipe``) on the real YouTube comments (1,956 rows, label =
the ground truth), ``configs`` configurations (lr x dim x optimizer), the rows shuffled once and cut into
one partition per worker. Three ways to train all of them on ``workers`` torchrun ranks of 1 thread each:

- ``mop``: each rank holds its partition; configurations hop (weights + optimizer state) once per sub-epoch;
- ``task``: task parallelism: each rank holds *all* the rows and trains whole configurations, taken from a
  shared queue, over the partitions in the order MOP visited them (so their losses must equal MOP's);
- ``ddp``: one configuration at a time over all ranks (DistributedDataParallel), each rank on its
  partition with batch / workers rows a step; gradients all-reduced every step.

(The two peers are ``mlsys.bench.mop.peers``, run under torchrun like MOP.)

Per way, the median of ``repeats`` runs of: training seconds (every rank ready, between barriers; torchrun's
start-up excluded, ``launch_s`` has it), bytes of data each worker holds, bytes sent between workers (MOP:
the packed states its couriers sent, counted; DDP: the bytes its comm hook all-reduced, times 2 (p - 1) / p
per rank as a ring all-reduce sends), and each configuration's last-epoch loss.
The last line is one JSON object with ``speedup_vs_ddp`` (ddp_s / mop_s), ``time_vs_task_parallel``
(mop_s / task_s), ``bytes_vs_ddp`` (DDP's bytes over MOP's) and ``losses_match`` (MOP's last-epoch losses
equal task parallelism's within 1e-5; DDP's batches mix both partitions, so its gap is reported apart).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mlsys.training.mop import partition
from mlsys.training.mop.trainee import Model, rows


def workload(num_buckets: int, workers: int, seed: int = 0) -> list[dict]:
    """The real comments featurized, labels one-hot, rows trimmed to a multiple of ``workers``, partitioned."""
    import pandas as pd

    from mlsys.model.featurizer import DEFAULT_CHAR_NGRAMS, HashingFeaturizer
    from mlsys.settings import settings

    files = sorted(Path(settings().data_dir, "youtube-spam").glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no YouTube comment CSVs under {settings().data_dir}/youtube-spam; set MLSYS_DATA_DIR")
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    df = df.iloc[: len(df) - len(df) % workers]  # equal partitions: DDP's ranks take the same number of steps
    ids, bag = HashingFeaturizer(num_buckets=num_buckets, char_ngrams=DEFAULT_CHAR_NGRAMS).encode_padded(
        df["CONTENT"].astype(str).tolist())
    label = torch.tensor(df.iloc[:, -1].to_numpy(), dtype=torch.long)
    proba = torch.nn.functional.one_hot(label, 2).float()
    return partition.split([ids, bag], [proba, torch.ones(len(df))], workers, seed=seed)


def configs(n: int, epochs: int, batch: int, num_buckets: int) -> list[Model]:
    from mlsys.training.select_mop import models

    grid = [{"lr": lr, "dim": dim, "optimizer": opt} for opt in ("adam", "sgd") for dim in (64, 32)
            for lr in (0.01, 0.003)]
    cands = [{**grid[i % len(grid)], "depth": 1, "dropout": 0.1, "epochs": epochs, "batch_size": batch}
             for i in range(n)]
    names = [f"c{i}-{c['optimizer']}-d{c['dim']}-lr{c['lr']}" for i, c in enumerate(cands)]
    return models(names, cands, num_buckets, 0, 0.0)


# -- the driver -------------------------------------------------------------------------------------------


def _peer(role: str, work: Path, models: list[Model], data_uri: str, visits: dict, workers: int) -> dict:
    from mlsys.training.parallel.launcher import launch

    work.mkdir(parents=True, exist_ok=True)
    (work / "job.json").write_text(json.dumps({"models": [m.to_json() for m in models], "data_uri": data_uri,
                                               "visits": visits}))
    t0 = time.perf_counter()
    launch(["-m", "mlsys.bench.mop.peers", role, str(work)], nproc=workers, on_line=lambda line: None)
    return {**json.loads((work / "result.json").read_text()), "launch_s": time.perf_counter() - t0}


def _mop(work: Path, models: list[Model], data_uri: str, workers: int, seed: int) -> dict:
    from mlsys.training.mop.hopper import train_mop

    t0 = time.perf_counter()
    report = train_mop(models, data_uri, str(work / "ckpt"), workers=workers, seed=seed, workdir=work / "job")
    return {"seconds": report.seconds, "launch_s": time.perf_counter() - t0, "bytes_sent": report.bytes_sent,
            "data_bytes": report.data_bytes, "losses": {m.name: report.epoch_losses(m.name)[-1] for m in models},
            "visits": report.visits, "hops": report.hops, "hop_wait_s": report.hop_wait_s,
            "timeline": [[v.config, v.epoch, v.worker, v.start, v.end] for v in report.timeline]}


def run(configs_n: int = 8, workers: int = 2, epochs: int = 2, repeats: int = 3, num_buckets: int = 1 << 14,
        batch: int = 32, out: Path | None = None) -> dict:
    models = configs(configs_n, epochs, batch, num_buckets)
    runs: dict[str, list[dict]] = {"mop": [], "task": [], "ddp": []}
    with tempfile.TemporaryDirectory(prefix="mlsys-bench-mop-") as tmp:
        data_uri = str(Path(tmp) / "parts")
        parts = workload(num_buckets, workers)
        partition.write(parts, data_uri)
        for r in range(repeats):  # interleaved, so a slow spell of a shared machine hits every way alike
            mop = _mop(Path(tmp) / f"mop-{r}", models, data_uri, workers, seed=r)
            runs["mop"].append(mop)
            runs["task"].append(_peer("task", Path(tmp) / f"task-{r}", models, data_uri, mop["visits"], workers))
            runs["ddp"].append(_peer("ddp", Path(tmp) / f"ddp-{r}", models, data_uri, {}, workers))
            print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f} s" for k, v in runs.items()),
                  flush=True)
    if out is not None:
        out.write_text(json.dumps(runs["mop"][-1]["timeline"]))
    med = {k: {"seconds": statistics.median(x["seconds"] for x in v),
               "launch_s": statistics.median(x["launch_s"] for x in v),
               "bytes_sent": statistics.median(x["bytes_sent"] for x in v),
               "data_bytes_per_worker": max(v[0]["data_bytes"])} for k, v in runs.items()}
    gaps = [abs(m["losses"][c] - t["losses"][c]) for m, t in zip(runs["mop"], runs["task"]) for c in m["losses"]]
    last = {k: v[-1]["losses"] for k, v in runs.items()}
    ddp_gap = max(abs(last["mop"][c] - last["ddp"][c]) / last["ddp"][c] for c in last["mop"])
    return {"configs": configs_n, "workers": workers, "epochs": epochs, "repeats": repeats,
            "rows": sum(rows(p) for p in parts), "medians": med, "losses": last,
            "mop_hops": runs["mop"][-1]["hops"], "mop_hop_wait_s": runs["mop"][-1]["hop_wait_s"],
            "speedup_vs_ddp": med["ddp"]["seconds"] / med["mop"]["seconds"],
            "time_vs_task_parallel": med["mop"]["seconds"] / med["task"]["seconds"],
            "bytes_vs_ddp": med["ddp"]["bytes_sent"] / max(med["mop"]["bytes_sent"], 1),
            "data_vs_task_parallel": med["mop"]["data_bytes_per_worker"] / med["task"]["data_bytes_per_worker"],
            "losses_match": max(gaps) <= 1e-5, "max_loss_gap_vs_task": max(gaps), "ddp_loss_gap": ddp_gap}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys bench mop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-buckets", type=int, default=1 << 14)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--timeline", type=Path, default=None, help="write the last MOP run's timeline (JSON) here")
    args = parser.parse_args(argv)
    res = run(args.configs, args.workers, args.epochs, args.repeats, args.num_buckets, args.batch, args.timeline)
    print(f"{'way':<6} {'train s':>8} {'launch s':>9} {'MB held/worker':>15} {'MB sent':>9}")
    for way, m in res["medians"].items():
        print(f"{way:<6} {m['seconds']:>8.2f} {m['launch_s']:>9.2f} {m['data_bytes_per_worker'] / 2**20:>15.2f} "
              f"{m['bytes_sent'] / 2**20:>9.1f}")
    print(json.dumps(res))
    return 0

