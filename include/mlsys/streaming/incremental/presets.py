"""The engine settings each mode starts from (a spec or a flag may override a field), per network where it differs."""

from __future__ import annotations

from dataclasses import replace

from mlsys.streaming.incremental.config import EngineConfig

PRESETS: dict[str, EngineConfig] = {
    # Exact: every changed pixel (> 16/255) is propagated with full halos (boxes: around 8-pixel tiles).
    "exact": EngineConfig(mode="exact", threshold=16 / 255, tile=8, min_pixels=1),
    # Krypton's approximations, tuned for >= 4x on carphone: a coarser change threshold (40/255, tiles need
    # 8 changed pixels), regions that stop growing (past tau = 1% of a map only their core is recomputed) and
    # a new base frame every 12 frames. Its error is measured by the benchmark and the stage, never assumed.
    "approx": EngineConfig(mode="approx", threshold=40 / 255, tile=8, min_pixels=8, tau=0.01, refresh_every=12,
                           refresh_share=0.5),
}

# EfficientNet-Lite0 (trained): a refresh costs 12x an incremental frame's fixed floor (~110 layers, each a few
# small ops), so approximate mode refreshes every 30 frames; specks of fewer than 16 changed pixels in an 8x8 tile
# are noise to it. On carphone that keeps 100% top-1 agreement with full inference of the actual frames.
MODEL_PRESETS: dict[tuple[str, str], EngineConfig] = {
    ("approx", "efficientnet-lite0"): replace(PRESETS["approx"], min_pixels=16, refresh_every=30),
}


def preset(mode: str, model: str = "") -> EngineConfig:
    """The settings ``mode`` starts from for network ``model`` (``mlsys.streaming.networks``)."""
    return MODEL_PRESETS.get((mode, model), PRESETS[mode])
