"""Spilled training equals unspilled training: losses, weights and the RNG stream, on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mlsys.training.spill.partitioner import partition
from mlsys.training.spill.spiller import Spiller, train_resident

STEPS = 5
OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/training/conftest.py


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(64, 64), nn.GELU(), nn.LayerNorm(64),
        nn.Linear(64, 64), nn.Dropout(0.1), nn.Linear(64, 4),
    )


def _batches(n: int = STEPS):
    g = torch.Generator().manual_seed(1)
    return [((torch.randn(8, 16, generator=g),), (torch.randint(0, 4, (8,), generator=g),)) for _ in range(n)]


def _reference(opt_name: str, batches):
    model = _model()
    torch.manual_seed(5)
    losses = train_resident(model, batches, OPTIMIZERS[opt_name], nn.functional.cross_entropy)
    return model, losses, torch.get_rng_state()


def _spilling_budget(layers, sample, opt, prefetch: bool) -> int:
    """The smallest fraction of the model's measured footprint that still partitions: several shards."""
    costs = Spiller.build(layers, sample, opt, 2**40, prefetch=False).costs
    total = sum(c.train_bytes for c in costs)
    for fraction in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        try:
            if len(partition(costs, int(total * fraction), prefetch, 0)) >= 2:
                return int(total * fraction) + 4096
        except ValueError:
            continue
    raise AssertionError("no budget spills this model")


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


@pytest.mark.parametrize("tier", ["host", "disk"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("prefetch", [False, True])
def test_spilled_training_equals_unspilled(tmp_path, opt_name, tier, prefetch):
    batches = _batches()
    ref, ref_losses, ref_rng = _reference(opt_name, batches)
    budget = _spilling_budget(_model(), batches[0][0], OPTIMIZERS[opt_name], prefetch)
    sp = Spiller.build(_model(), batches[0][0], OPTIMIZERS[opt_name], budget, tier=tier, root=tmp_path / "store",
                       prefetch=prefetch)
    assert len(sp.shards) >= 2, "the budget must force spilling"
    torch.manual_seed(5)
    losses = [sp.train_step(x, y, nn.functional.cross_entropy) for x, y in batches]
    sp.close()
    assert losses == pytest.approx(ref_losses, abs=1e-5)
    assert _max_diff(ref, sp.export()) < 1e-5  # weights and BatchNorm running statistics
    assert torch.equal(torch.get_rng_state(), ref_rng), "the RNG must be where unspilled training leaves it"


def test_list_and_generator_of_blocks_and_multi_input_first_layer(tmp_path):
    """The text classifier: its first layer takes (ids, bag weights); blocks come from a generator."""
    from mlsys.model.loss import noise_aware_loss
    from mlsys.model.text_classifier import TextClassifier, TextClassifierConfig

    cfg = TextClassifierConfig(num_buckets=512, dim=32, depth=3)
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(4):
        ids = torch.randint(0, 512, (16, 6), generator=g)
        bag = torch.full((16, 6), 1 / 6)
        proba = torch.softmax(torch.randn(16, 2, generator=g), -1)
        batches.append(((ids, bag), (proba, torch.rand(16, generator=g))))
    torch.manual_seed(0)
    ref = TextClassifier(cfg)
    torch.manual_seed(0)
    spilled = TextClassifier(cfg)
    opt = OPTIMIZERS["adam"]
    torch.manual_seed(9)
    ref_losses = train_resident(ref.pipeline_layers(), batches, opt, noise_aware_loss)
    budget = _spilling_budget(TextClassifier(cfg).pipeline_layers(), batches[0][0], opt, False)
    sp = Spiller.build((layer for layer in spilled.pipeline_layers()), batches[0][0], opt, budget, tier="disk",
                       root=tmp_path / "s", prefetch=False)
    assert len(sp.shards) >= 2
    torch.manual_seed(9)
    losses = [sp.train_step(x, y, noise_aware_loss) for x, y in batches]
    assert losses == pytest.approx(ref_losses, abs=1e-5)
    out = sp.export()
    for a, b in zip(ref.pipeline_layers(), out):
        assert _max_diff(a, b) < 1e-5


def test_predict_is_the_eval_forward(tmp_path):
    batches = _batches(2)
    ref = _model()
    budget = _spilling_budget(_model(), batches[0][0], OPTIMIZERS["sgd"], False)
    sp = Spiller.build(_model(), batches[0][0], OPTIMIZERS["sgd"], budget, prefetch=False)
    ref.eval()
    with torch.no_grad():
        expected = ref(batches[1][0][0])
    assert torch.allclose(sp.predict(batches[1][0]), expected, atol=1e-6)
    assert all(layer.training for layer in sp.layers), "predict must leave the layers in training mode"


def _mapped(root: Path) -> list[str]:
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if str(root) in line]


def test_disk_tier_unmaps_every_shard_after_use(tmp_path):
    """Only the shard in use is mapped: after a step, no store file is mapped any more."""
    batches = _batches(2)
    budget = _spilling_budget(_model(), batches[0][0], OPTIMIZERS["adam"], True)
    sp = Spiller.build(_model(), batches[0][0], OPTIMIZERS["adam"], budget, tier="disk", root=tmp_path / "store")
    sp.train_step(*batches[0], nn.functional.cross_entropy)
    assert _mapped(tmp_path / "store") == []
    assert all(p.numel() == 0 for layer in sp.layers for p in layer.parameters()), "weights live in the store only"
    sp.close()
