"""Generation of fashion-synth: products, splits, pairs and captions from ``(scale, seed, size)``.

Rules:

* **Products** (:mod:`.products`): 6 categories x 12 colours x 6 patterns x 4 shape values =
  288 distinct products per category, 1,728 in all.
* **Splits**: per category the 288 products are shuffled and split into a test pool (30 %,
  86 products) and a training pool (202); the splits share no product, hence no image.
  Within a split every product has exactly one image, so "the target image" and "any image
  with the target's attributes" are the same thing.
* **Pairs**: per category ``pairs_per_category`` (reference, target) pairs of distinct
  products of the split's pool, no pair twice. The number of changed attributes k is drawn
  uniformly from {1, 2, 3}; the target is drawn uniformly among pool products that differ
  from the reference in exactly k attributes (the category never changes; when no such
  product is left the nearest k that has one is used).
* **Captions**: ``captions_per_pair`` (2, as FashionIQ's two annotators) independent
  captions per pair (:mod:`.captions`), each a training triplet or a test query.
* **Images**: the split's images are the products its pairs use, in order of first use;
  at ``small`` and ``full`` the test split also holds every other product of its pool as a
  distractor, so each category's gallery is its whole test pool (86 images). Each image is
  drawn at the requested size with its own jitter (:func:`.products.random_jitter`).

Everything is a pure function of ``(scale, seed, size)``: the same triple gives identical
images and captions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cirbench_fashion_synth.captions import make_caption
from cirbench_fashion_synth.products import (
    ATTRIBUTES,
    CATEGORIES,
    GRID,
    Product,
    all_products,
    random_jitter,
    render_product,
)

logger = logging.getLogger(__name__)

GEN_VERSION = 1
"""Bump whenever any rule here, in :mod:`.products` or :mod:`.captions` changes the data
(it names the cache folder)."""

TEST_FRACTION = 0.3
"""Share of each category's products that form its test pool."""


@dataclass(frozen=True)
class ScaleSpec:
    """How much to generate for one ``dataset_scale``."""

    train_pairs_per_category: int
    test_pairs_per_category: int
    captions_per_pair: int = 2
    test_distractors: bool = True


SCALES: dict[str, ScaleSpec] = {
    "tiny": ScaleSpec(train_pairs_per_category=6, test_pairs_per_category=4, test_distractors=False),
    "small": ScaleSpec(train_pairs_per_category=300, test_pairs_per_category=60),
    "full": ScaleSpec(train_pairs_per_category=2000, test_pairs_per_category=250),
}
"""``dataset_scale`` -> sizes (see the plugin README for the resulting counts)."""


def split_pools(rng: np.random.Generator) -> dict[str, tuple[list[Product], list[Product]]]:
    """Per category, ``(train_pool, test_pool)``: a random partition of its products."""
    out = {}
    for name in CATEGORIES:
        products = all_products(name)
        order = rng.permutation(len(products))
        n_test = round(TEST_FRACTION * len(products))
        test = [products[i] for i in order[:n_test]]
        train = [products[i] for i in order[n_test:]]
        out[name] = (train, test)
    return out


def draw_pairs(rng: np.random.Generator, pool: list[Product], n: int) -> list[tuple[int, int]]:
    """``n`` distinct (reference, target) index pairs into ``pool`` (one category), with
    1..3 changed attributes (see the module docstring)."""
    m = len(pool)
    table = np.array([[p.get(a) for a in ATTRIBUTES] for p in pool])
    distance = (table[:, None, :] != table[None, :, :]).sum(-1)  # [m, m] changed attributes
    max_pairs = m * (m - 1)
    if n > max_pairs:
        raise ValueError(f"{n} pairs asked from a pool of {m} products (at most {max_pairs})")
    seen: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n:
        ref = int(rng.integers(m))
        k = int(rng.integers(1, 4))
        for kk in sorted({1, 2, 3}, key=lambda x: (abs(x - k), x)):
            cands = [int(j) for j in np.flatnonzero(distance[ref] == kk) if (ref, int(j)) not in seen]
            if cands:
                tgt = cands[int(rng.integers(len(cands)))]
                seen.add((ref, tgt))
                pairs.append((ref, tgt))
                break
    return pairs


@dataclass
class GeneratedSplit:
    """One split: its products (one image each) and pairs as local indices with captions."""

    products: list[Product]
    pairs: list[dict[str, Any]]


def generate_split(
    rng: np.random.Generator,
    pools: dict[str, list[Product]],
    pairs_per_category: int,
    captions_per_pair: int,
    distractors: bool,
) -> GeneratedSplit:
    products: list[Product] = []
    index: dict[Product, int] = {}

    def local(p: Product) -> int:
        if p not in index:
            index[p] = len(products)
            products.append(p)
        return index[p]

    pairs: list[dict[str, Any]] = []
    for category, pool in pools.items():
        for r, t in draw_pairs(rng, pool, pairs_per_category):
            ref, tgt = pool[r], pool[t]
            captions = []
            for _ in range(captions_per_pair):
                text, style, mentions = make_caption(rng, ref, tgt)
                captions.append({"text": text, "style": style, "mentions": [m.to_dict() for m in mentions]})
            pairs.append({
                "reference": local(ref), "target": local(tgt), "group": category,
                "changed": ref.changed(tgt), "captions": captions,
            })
    if distractors:
        for pool in pools.values():
            for p in pool:
                local(p)
    return GeneratedSplit(products, pairs)


def render_products(products: list[Product], rng: np.random.Generator, size: int) -> np.ndarray:
    """``uint8 [len(products), size, size, 3]``, each with its own jitter from ``rng``."""
    out = np.empty((len(products), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(products):
        out[i] = render_product(p, size, random_jitter(rng))
    return out


def generate(scale: str, seed: int, size: int = GRID) -> tuple[np.ndarray, dict[str, Any]]:
    """Generate fashion-synth at ``scale`` from ``seed`` with images of ``size`` pixels.

    Returns ``(images, meta)``: ``images`` is ``uint8 [N, size, size, 3]`` (training images
    first, then test images); ``meta`` is JSON-able: products, splits, triplets and queries
    (each with its pair's changed attributes, caption style and mentions).
    """
    if scale not in SCALES:
        raise ValueError(f"fashion-synth: unknown dataset_scale {scale!r}; expected {sorted(SCALES)}")
    if size < 8:
        raise ValueError(f"fashion-synth: image size must be >= 8, got {size}")
    spec = SCALES[scale]
    t0 = time.perf_counter()
    pool_rng, train_rng, test_rng, image_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    pools = split_pools(pool_rng)
    train = generate_split(train_rng, {c: tr for c, (tr, _) in pools.items()},
                           spec.train_pairs_per_category, spec.captions_per_pair, distractors=False)
    test = generate_split(test_rng, {c: te for c, (_, te) in pools.items()},
                          spec.test_pairs_per_category, spec.captions_per_pair, spec.test_distractors)
    offset = len(train.products)
    products = train.products + test.products
    t1 = time.perf_counter()
    images = render_products(products, image_rng, size)
    t2 = time.perf_counter()

    def records(split: GeneratedSplit, shift: int, is_query: bool) -> list[dict[str, Any]]:
        out = []
        for pair_id, pair in enumerate(split.pairs):
            for c in pair["captions"]:
                rec = {
                    "reference": pair["reference"] + shift, "text": c["text"],
                    "target": pair["target"] + shift, "group": pair["group"], "pair": pair_id,
                    "changed": pair["changed"], "style": c["style"], "mentions": c["mentions"],
                }
                if is_query:
                    rec["targets"] = [rec["target"]]  # identity hits (README "hit rule")
                out.append(rec)
        return out

    test_categories = [p.category for p in test.products]
    meta: dict[str, Any] = {
        "generator": "fashion-synth",
        "generator_version": GEN_VERSION,
        "scale": scale,
        "seed": seed,
        "image_size": size,
        "num_images": len(products),
        "products": [p.to_list() for p in products],
        "splits": {
            "train": {"start": 0, "stop": offset},
            "test": {"start": offset, "stop": len(products)},
        },
        "galleries": {
            c: [offset + i for i, cat in enumerate(test_categories) if cat == c] for c in CATEGORIES
        },
        "triplets": records(train, 0, is_query=False),
        "queries": records(test, offset, is_query=True),
    }
    logger.info(
        "fashion-synth: generated scale=%s seed=%d size=%d: %d images, %d triplets, %d queries "
        "(pairs and captions %.2fs, drawing %.2fs)",
        scale, seed, size, len(products), len(meta["triplets"]), len(meta["queries"]), t1 - t0, t2 - t1,
    )
    return images, meta


def caption_statistics(meta: dict[str, Any]) -> dict[str, Any]:
    """Word counts of every caption (triplets and queries) of generated ``meta``: overall
    min / median / mean / max, shares of short (<= 5 words) and long (>= 25 words) captions,
    per-style min / median / max, distinct words and the number of captions per k."""
    records = meta["triplets"] + meta["queries"]
    words = np.array([len(r["text"].split()) for r in records])
    styles: dict[str, list[int]] = {}
    for r, w in zip(records, words):
        styles.setdefault(r["style"], []).append(int(w))
    vocab = {w.strip(".,!?").lower() for r in records for w in r["text"].split()}
    k: dict[int, int] = {}
    for r in records:
        k[len(r["changed"])] = k.get(len(r["changed"]), 0) + 1
    return {
        "captions": len(records),
        "words_min_median_mean_max": [int(words.min()), float(np.median(words)),
                                      round(float(words.mean()), 1), int(words.max())],
        "share_at_most_5_words": round(float((words <= 5).mean()), 3),
        "share_at_least_25_words": round(float((words >= 25).mean()), 3),
        "per_style_min_median_max": {s: [min(v), float(np.median(v)), max(v)] for s, v in sorted(styles.items())},
        "distinct_words": len(vocab),
        "captions_per_changed_count": dict(sorted(k.items())),
    }
