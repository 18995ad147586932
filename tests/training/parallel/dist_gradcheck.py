"""Run by torchrun from test_equivalence.py: one step under pipeline / ddp vs single-process training.

Every rank builds the same model and batch (same seed), computes the single-process
reference itself, then runs the strategy and compares the loss and its own gradients.
A mismatch raises, so the launcher fails with this rank's error. Rank 0 prints one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
import torch.distributed as dist

from mlsys.model.featurizer import HashingFeaturizer
from mlsys.model.loss import noise_aware_loss, pack_target
from mlsys.model.text_classifier import TextClassifier, TextClassifierConfig
from mlsys.training.parallel.ddp import DDPStrategy
from mlsys.training.parallel.launcher import rank_errors
from mlsys.training.parallel.pipeline import PipelineDDPStrategy, PipelineStrategy

TEXTS = ["buy cheap pills now", "i love this song", "free money click here", "great voice", "subscribe to my channel",
         "what a beautiful video", "win a prize", "", "check out my page http://x.y", "so good"] * 4  # 40 rows


@rank_errors
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--microbatches", default="1,4,8")
    parser.add_argument("--schedules", default="gpipe")
    parser.add_argument("--ddp", action="store_true")
    parser.add_argument("--rematerialize", action="store_true")
    parser.add_argument("--hybrid-stages", type=int, default=0, help="also pipeline x ddp with this many stages")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(0)
    cfg = TextClassifierConfig(num_buckets=512, dim=16, depth=2 * world - 2 if world > 1 else 2, dropout=0.0)
    reference = TextClassifier(cfg)
    feat = HashingFeaturizer(num_buckets=512)
    texts = TEXTS[:32]
    ids, bag = feat.encode_padded(texts)
    proba = torch.softmax(torch.randn(len(texts), 2), dim=1)
    weight = torch.rand(len(texts))
    weight[3] = 0.0
    target = pack_target(proba, weight, weight.sum())

    single = copy.deepcopy(reference)
    loss = noise_aware_loss(single(*feat.encode(texts)), proba, weight)
    loss.backward()
    ref_grads = [layer for layer in single.pipeline_layers()]
    worst = {}

    def compare(name, got_loss, layers, offset):
        diffs = [abs(got_loss - loss.item())] if got_loss is not None else []
        for i, layer in enumerate(layers):
            for (pn, p), (_, q) in zip(layer.named_parameters(), ref_grads[offset + i].named_parameters()):
                diffs.append((p.grad - q.grad).abs().max().item())
        worst[name] = max(diffs)
        if worst[name] > 1e-5:
            raise AssertionError(f"rank {rank}: {name} differs from single-process training by {worst[name]:.3g}")

    layers_total = cfg.depth + 2
    balance = [layers_total // world] * world
    for schedule in args.schedules.split(","):
        for m in [int(x) for x in args.microbatches.split(",")]:
            if schedule == "1f1b" and m < world:
                continue  # 1F1B needs M >= K
            model = copy.deepcopy(reference)
            strat = PipelineStrategy(model, balance, m, schedule=schedule)
            got = strat.step((ids, bag), target)
            lo, hi = strat.layer_range
            compare(f"{schedule} K={world} M={m}", got, model.pipeline_layers()[lo:hi], lo)
    if args.rematerialize:  # activation checkpointing recomputes forwards in backward: same gradients
        model = copy.deepcopy(reference)
        strat = PipelineStrategy(model, balance, 4, rematerialize=True)
        got = strat.step((ids, bag), target)
        lo, hi = strat.layer_range
        compare(f"gpipe+remat K={world} M=4", got, model.pipeline_layers()[lo:hi], lo)
    if args.hybrid_stages:
        k = args.hybrid_stages
        for m in [int(x) for x in args.microbatches.split(",")]:
            model = copy.deepcopy(reference)
            strat = PipelineDDPStrategy(model, [layers_total // k] * k, m)
            got = strat.step((ids, bag), target)
            lo, hi = strat.layer_range
            compare(f"pipeline x ddp K={k} R={world // k} M={m}", got, model.pipeline_layers()[lo:hi], lo)
    if args.ddp:
        model = copy.deepcopy(reference)
        got = DDPStrategy(model).step((ids, bag), target)
        compare(f"ddp world={world}", got, model.pipeline_layers(), 0)
    dist.barrier()
    if rank == 0:
        print(json.dumps({"worst": worst}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
