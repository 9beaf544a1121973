"""cirbench plugin ``fashion-synth``: procedurally drawn garments and shoes with relative captions.

An embedded second dataset in the spirit of FashionIQ and Shoes (docs/papers.md §1.4, §1.5):
no download, generated in about a second at ``small`` and cached.

**Generation rules** (:mod:`.products`, :mod:`.generator`, :mod:`.captions`):

* A product is (category, colour, pattern, shape): 6 categories (``tshirt``, ``dress``,
  ``skirt``, ``trousers``, ``shoe``, ``boot``) x 12 colours x 6 patterns (plain, striped,
  dotted, checked, zigzag, floral) x 4 values of the category's shape attribute (sleeve length
  for t-shirts and dresses, length for skirts and trousers, heel height for shoes, shaft height
  for boots) = 288 products per category. Each is drawn with PIL as a flat silhouette at the
  protocol's ``image_size`` with a small per-image jitter (shift +-2 px, shade +-8).
* Per category, 30 % of the products form the test pool and the rest the training pool: the
  splits share no image. Within a split each product has exactly one image.
* Pairs join two products of one category and one split that differ in 1, 2 or 3 attributes
  (k uniform); each pair gets two independent captions, each a training triplet or a test query.
* Captions come in four styles (terse 30 %, FashionIQ-like relative 30 %, imperative 20 %,
  multi-sentence feedback 20 %), with synonyms for every colour ("crimson", "scarlet" for red),
  pattern ("polka-dot", "spotted") and shape value, comparatives ("shorter sleeves", "a higher
  heel"), negations ("not striped") and, in feedback, sentences about what stays the same.
  Every changed attribute is mentioned; the generator records how (``mentions``).

**Sizes** (``dataset_scale``; image counts are at seed 0):

========  ===========  ==========  =========  ========  ===================
scale     train imgs   test imgs   triplets   queries   gallery / category
========  ===========  ==========  =========  ========  ===================
tiny      71           47          72         48        7-8
small     1,150        516         3,600      720       86
full      1,212        516         24,000     3,000     86
========  ===========  ==========  =========  ========  ===================

**Hit rule**: identity, as for FashionIQ and Shoes (docs/papers.md §0 decision 2): a query's
only correct target is its target image. Since no two images of a split share all attributes,
this equals "any image with the target's attributes". Queries are grouped by category and
ranked against their category's gallery (VAL's FashionIQ protocol, decision 3); the reference
is removed by the engine. Base loss: ``batch_classification`` (the fashion datasets' loss).

**Caption statistics** at ``small`` (all 4,320 captions): words min 1, median 8, mean 10.7,
max 35; 33 % have at most 5 words, 11 % at least 25; feedback captions have 4 or 5
sentences (median 25 words); 230 distinct words.
"""

from __future__ import annotations

from cirbench import DatasetSpec, hookimpl
from cirbench_fashion_synth.captions import make_caption, mention_options
from cirbench_fashion_synth.dataset import GENERATION_SEED, FashionSynthDataset, build
from cirbench_fashion_synth.generator import GEN_VERSION, SCALES, generate
from cirbench_fashion_synth.products import ATTRIBUTES, CATEGORIES, Product, render_product

__all__ = [
    "ATTRIBUTES",
    "CATEGORIES",
    "GENERATION_SEED",
    "GEN_VERSION",
    "SCALES",
    "FashionSynthDataset",
    "Product",
    "build",
    "generate",
    "make_caption",
    "mention_options",
    "render_product",
]


@hookimpl
def cirbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="fashion-synth",
            build=build,
            description=(
                "synthetic garments and shoes (FashionIQ-like): relative captions from a word "
                "to a paragraph, per-category galleries, identity hits; generated, no download"
            ),
            presets=("quick", "smoke", "full"),
        )
    ]
