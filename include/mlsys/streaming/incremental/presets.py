"""The engine settings each mode starts from (a spec or a flag may override a field)."""

from __future__ import annotations

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
