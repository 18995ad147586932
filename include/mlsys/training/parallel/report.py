"""MLflow logging for distributed training: the partition, stage times, bubble and the schedule plot.

Stage-side (MLflow, matplotlib): the engine reports through rank 0's event lines
and ``result.json``; this module turns them into MLflow params, metrics and artifacts.
"""

from __future__ import annotations


def log_partition(event: dict) -> None:
    import mlflow

    balance = event["balance"]
    mlflow.log_param("balance", ",".join(map(str, balance)))
    stats = event.get("layer_stats")
    if stats:
        mlflow.log_dict({"balance": balance, "layers": stats}, "partition.json")
        start = 0
        for k, count in enumerate(balance):
            part = stats[start : start + count]
            mlflow.log_metrics({f"stage_{k}_profiled_time_s": sum(s["time_s"] for s in part),
                                f"stage_{k}_bytes": float(sum(s["param_bytes"] + s["activation_bytes"] for s in part))})
            start += count


def log_timeline(timeline: list[dict]) -> None:
    """Metrics per stage (busy seconds, micro-batches held) and the schedule plot of one step."""
    import mlflow

    from mlsys.training.parallel.pipeline import bubble_fraction

    for s in timeline:
        busy = sum(t1 - t0 for _, _, t0, t1 in s["events"])
        mlflow.log_metrics({f"stage_{s['stage']}_busy_s": busy, f"stage_{s['stage']}_max_in_flight": s["max_in_flight"]})
    mlflow.log_metric("bubble_fraction", bubble_fraction(timeline))
    mlflow.log_dict({"stages": timeline}, "pipeline_timeline.json")
    fig = schedule_figure(timeline)
    mlflow.log_figure(fig, "pipeline_schedule.png")
    import matplotlib.pyplot as plt

    plt.close(fig)


def schedule_figure(timeline: list[dict], title: str = "Pipeline schedule (one step)"):
    """Gantt chart: one row per stage, a bar per forward (light) / backward (dark) of each micro-batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.8 + 0.6 * len(timeline)))
    colors = {"F": "#8ecae6", "B": "#fb8500"}
    for s in timeline:
        y = len(timeline) - 1 - s["stage"]
        for kind, mb, t0, t1 in s["events"]:
            ax.barh(y, (t1 - t0) * 1e3, left=t0 * 1e3, color=colors[kind], edgecolor="black", linewidth=0.4)
            ax.text((t0 + t1) / 2 * 1e3, y, f"{kind}{mb}", ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(timeline)), [f"stage {len(timeline) - 1 - i}" for i in range(len(timeline))])
    ax.set_xlabel("ms since the step started")
    ax.set_title(title)
    fig.tight_layout()
    return fig
