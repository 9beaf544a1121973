"""``python -m cirbench_fashion_synth [SCALE]``: generate in memory and print the sizes and
caption statistics that the README quotes (default scale: small)."""

from __future__ import annotations

import json
import sys
import time

from cirbench_fashion_synth.generator import caption_statistics, generate

scale = sys.argv[1] if len(sys.argv) > 1 else "small"
t0 = time.perf_counter()
images, meta = generate(scale, 0)
seconds = time.perf_counter() - t0
train, test = meta["splits"]["train"], meta["splits"]["test"]
print(json.dumps({
    "scale": scale,
    "generation_seconds": round(seconds, 2),
    "train_images": train["stop"] - train["start"],
    "test_images": test["stop"] - test["start"],
    "triplets": len(meta["triplets"]),
    "queries": len(meta["queries"]),
    "gallery_per_category": {c: len(g) for c, g in meta["galleries"].items()},
    **caption_statistics(meta),
}, indent=1))
