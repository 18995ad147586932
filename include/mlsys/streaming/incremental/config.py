"""The incremental engine's settings: how it detects changes, propagates them and refreshes its base frame.

Validated at construction: a bad value names the field, the value and the fix.
The presets each mode starts from are in ``presets``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from mlsys.spec import require

MODES = ("exact", "approx")
REGIONS = ("pixels", "boxes")



@dataclass(frozen=True)
class EngineConfig:
    """How the engine detects changes, propagates them and refreshes its base frame."""

    mode: str = "exact"
    regions: str = "pixels"  # per-position masks (gather + GEMM), or boxes (Krypton's patches; multi-frame batches)
    threshold: float = 16 / 255  # per-pixel change threshold, in the frame's units (pixels in [0, 1])
    tile: int = 16  # change-detection tile side, in pixels (pixels: only for the min_pixels test)
    min_pixels: int = 1  # changed pixels a tile needs to count as changed
    tau: float = 0.25  # approx: a region past tau of a map (boxes: of its side) is cut to its core (exact ignores it)
    refresh_every: int = 0  # approx: full inference on a new base frame every N frames (0: never)
    refresh_share: float = 0.6  # full inference when the changed boxes cover more than this share
    max_cost: float = 0.8  # full inference when propagating would cost more than this share of its FLOPs
    # boxes only, from here to parallel_flops
    merge_slack: float = 1.25  # merge two boxes when their hull is at most this x their union
    max_boxes: int = 64  # per layer and frame
    # What one kernel call costs by itself, in FLOP-equivalents: dispatch, plus streaming the layer's weights
    # (a 512-channel 3x3 conv reads 9 MB per call). Boxes merge when their hull's extra FLOPs cost less
    # than the call it saves. Measured on a 2-core x86 host: ~15 us per call, ~16 FLOPs per weight byte.
    call_flops: float = 2e6
    flops_per_weight_byte: float = 16.0
    batch_frames: int = 1  # frames diffed against one base and propagated together
    # ops smaller than this run on one thread (see _threads). 0 (all ops use every thread) measured best on an
    # idle 2-core host (synthetic exact 2.61x vs 2.30x at 3e8); on an oversubscribed host raise it to ~3e8.
    parallel_flops: float = 0.0
    on_unsupported: str = "error"  # or "fallback": recompute in full from that layer on

    def __post_init__(self) -> None:
        require(self.mode in MODES, "EngineConfig", "mode", self.mode, f"use one of {MODES}")
        require(self.regions in REGIONS, "EngineConfig", "regions", self.regions, f"use one of {REGIONS}")
        require(0 <= self.threshold < 1, "EngineConfig", "threshold", self.threshold, "use a value in [0, 1), e.g. 16/255")
        require(self.tile >= 1, "EngineConfig", "tile", self.tile, "use a tile side of at least 1 pixel, e.g. 16")
        require(self.min_pixels >= 1, "EngineConfig", "min_pixels", self.min_pixels, "use at least 1")
        require(0 < self.tau <= 1, "EngineConfig", "tau", self.tau, "use a share in (0, 1]; 1 means no truncation")
        require(self.refresh_every >= 0, "EngineConfig", "refresh_every", self.refresh_every, "use 0 (never) or a frame count")
        require(0 < self.refresh_share <= 1, "EngineConfig", "refresh_share", self.refresh_share, "use a share in (0, 1]")
        require(self.max_cost > 0, "EngineConfig", "max_cost", self.max_cost, "use a positive share of full FLOPs, e.g. 0.8")
        require(self.merge_slack >= 1, "EngineConfig", "merge_slack", self.merge_slack, "use a factor >= 1, e.g. 1.25")
        require(self.max_boxes >= 1, "EngineConfig", "max_boxes", self.max_boxes, "use at least 1")
        require(self.call_flops >= 0, "EngineConfig", "call_flops", self.call_flops, "use 0 or more FLOPs")
        require(self.flops_per_weight_byte >= 0, "EngineConfig", "flops_per_weight_byte", self.flops_per_weight_byte,
                "use 0 or more FLOPs per byte")
        require(self.parallel_flops >= 0, "EngineConfig", "parallel_flops", self.parallel_flops, "use 0 or more FLOPs")
        require(self.batch_frames >= 1, "EngineConfig", "batch_frames", self.batch_frames, "use at least 1 frame per batch")
        require(self.batch_frames == 1 or self.regions == "boxes", "EngineConfig", "batch_frames", self.batch_frames,
                "frames are batched by boxes: use regions='boxes' with it, or batch_frames=1")
        require(self.on_unsupported in ("error", "fallback"), "EngineConfig", "on_unsupported", self.on_unsupported,
                "use 'error' or 'fallback'")

    @property
    def effective_tau(self) -> float:
        return self.tau if self.mode == "approx" else 1.0


@contextlib.contextmanager
def threads(n: int):
    """Run with ``n`` intra-op threads. Patch ops are small: waking a thread pool for each costs more than
    it saves, and on a loaded machine a pool's barrier waits for a descheduled thread (100x slower)."""
    import torch  # here: a spec that reads the modes (a DAG file) imports this module without torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)
