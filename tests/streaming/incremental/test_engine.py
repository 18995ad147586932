import pytest
import torch
from torch import nn

from mlsys.model.cnn import build_cnn
from mlsys.streaming.incremental.config import EngineConfig
from mlsys.streaming.incremental.engine import FrameSizeError, IncrementalEngine
from mlsys.streaming.incremental.propagation import UnsupportedLayerError
from mlsys.streaming.incremental.region import detect_changes
from mlsys.streaming.incremental.synthetic import synthetic_frames

SIZE = 64


def _stream(n=6, seed=0):
    """A moving object, plus scattered flicker in two places: several boxes per frame."""
    frames = synthetic_frames(n, SIZE, 0.05, speed=3, seed=seed)
    for t in range(n):
        frames[t, :, 4:7, 50:53] += 0.2 * (t % 2)
        frames[t, :, 55:58, 5:9] -= 0.15 * ((t + 1) % 2)
    return frames.clamp(0, 1)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("regions", ["pixels", "boxes"])
@pytest.mark.parametrize("name,width", [("small", 0.25), ("vgg16", 0.125), ("resnet18", 0.125)])
def test_exact_mode_equals_full_inference_of_the_seen_frame(name, width, regions):
    model = build_cnn(name, width=width, num_classes=10, seed=1)
    engine = IncrementalEngine(model, (3, SIZE, SIZE), EngineConfig(mode="exact", regions=regions, tile=8,
                                                                    max_cost=10.0, refresh_share=1.0))
    incremental = 0
    for frame in _stream():
        out, stats = engine.process(frame[None])
        seen = engine.views.tensors[engine.input_name]  # the base input: what the engine saw of this frame
        with torch.no_grad():
            full = model(seen)
        assert _rel(out, full) <= 1e-4, f"{name}: frame differs from full inference"
        incremental += not stats[0].refreshed
        assert stats[0].flops <= engine.full_flops * 1.5
    assert incremental == 5  # every frame after the first went through the incremental path


def test_maps_too_large_for_a_gather_table_gather_per_frame_exactly(monkeypatch):
    import mlsys.streaming.incremental.engine as engine_module

    monkeypatch.setattr(engine_module, "GATHER_TABLE_MAX", 0)
    model = build_cnn("resnet18", width=0.125, num_classes=10, seed=4)
    engine = IncrementalEngine(model, (3, SIZE, SIZE), EngineConfig(max_cost=10.0, refresh_share=1.0))
    assert all(s.gather is None for s in engine.steps)
    for frame in _stream(4):
        out, stats = engine.process(frame[None])
        with torch.no_grad():
            assert _rel(out, model(engine.views.tensors[engine.input_name])) <= 1e-4
    assert not stats[0].refreshed


def test_multi_frame_batches_are_exact_against_one_base():
    model = build_cnn("small", width=0.25, seed=2)
    cfg = EngineConfig(mode="exact", regions="boxes", tile=8, batch_frames=3, max_cost=10.0, refresh_share=1.0)
    engine = IncrementalEngine(model, (3, SIZE, SIZE), cfg)
    frames = _stream(7)
    engine.process(frames[:1])
    base = engine.views.tensors[engine.input_name][0].clone()
    out, stats = engine.process(frames[1:4])
    for frame, o in zip(frames[1:4], out):
        seen = base.clone()
        for b in detect_changes(frame, base, cfg.threshold, cfg.tile)[0]:
            seen[:, b.y0:b.y1, b.x0:b.x1] = frame[:, b.y0:b.y1, b.x0:b.x1]
        with torch.no_grad():
            assert _rel(o[None], model(seen[None])) <= 1e-4
    assert not any(s.refreshed for s in stats)
    # the last frame of the batch became the base
    assert _rel(engine.views.tensors[engine.input_name][0], frames[3]) < 0.2


def test_refresh_policies_and_unchanged_frames():
    model = build_cnn("small", width=0.25, seed=3)
    frames = _stream(9)
    # this tiny model's layers cost less than a kernel call: without call_flops=0 the engine (rightly) merges
    # every patch into the whole map and refreshes each frame; the refresh policy is what is tested here
    engine = IncrementalEngine(model, (3, SIZE, SIZE), EngineConfig(mode="approx", tile=8, tau=0.1, refresh_every=4,
                                                                    call_flops=0.0, flops_per_weight_byte=0.0))
    out, stats = engine.process(frames)
    assert [s.refreshed for s in stats] == [True, False, False, False, True, False, False, False, True]
    with torch.no_grad():
        full = torch.cat([model(f[None]) for f in frames])
    errors = [_rel(o, f) for o, f in zip(out, full)]
    assert max(errors) < 0.2  # measured, not assumed: approximate mode drifts a little, refreshes reset it
    assert errors[4] < 1e-5 and errors[8] < 1e-5
    # a frame that changed everywhere is cheaper in full: the engine refreshes
    engine = IncrementalEngine(model, (3, SIZE, SIZE), EngineConfig(refresh_share=0.5))
    _, stats = engine.process(torch.stack([frames[0], 1 - frames[0], 1 - frames[0]]))
    assert [s.refreshed for s in stats] == [True, True, False]
    assert stats[2].box_share == 0 and stats[2].flops < 0.01 * engine.full_flops


class WithUpsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.relu(self.conv2(self.up(self.relu(self.conv(x)))))
        return self.head(x.mean((2, 3)))


def test_unsupported_layer_is_named_or_falls_back_exactly():
    model = WithUpsample().eval()
    with pytest.raises(UnsupportedLayerError, match=r"layer 'up' \(Upsample\)"):
        IncrementalEngine(model, (3, 32, 32))
    with pytest.warns(UserWarning, match="recomputing in full from this layer on"):
        engine = IncrementalEngine(model, (3, 32, 32), EngineConfig(on_unsupported="fallback", tile=8))
    assert len(engine.fallbacks) == 1 and "Upsample" in engine.fallbacks[0]
    frames = torch.rand(3, 3, 32, 32)
    frames[1:, :, :8, :8] = 0.0
    out, _ = engine.process(frames)
    with torch.no_grad():
        assert _rel(out[2:], model(engine.views.tensors[engine.input_name])) <= 1e-4


def test_wrong_frame_size_and_bad_config_are_clear_errors():
    engine = IncrementalEngine(build_cnn("small", width=0.25), (3, SIZE, SIZE))
    engine.process(torch.rand(1, 3, SIZE, SIZE))
    before = engine.views.tensors[engine.input_name].clone()
    with pytest.raises(FrameSizeError, match=r"built for \(3, 64, 64\).*resize frames to 64x64"):
        engine.process(torch.rand(1, 3, 48, 64))
    assert torch.equal(engine.views.tensors[engine.input_name], before)  # state untouched
    with pytest.raises(ValueError, match=r"EngineConfig.tau=0 is invalid"):
        EngineConfig(tau=0)
    with pytest.raises(ValueError, match=r"EngineConfig.mode='fast' is invalid"):
        EngineConfig(mode="fast")
