"""Relative captions of fashion-synth: many templates and synonyms, from a word to a paragraph.

A caption describes how the target differs from the reference. Each changed attribute is
first turned into a :class:`Mention` (the exact phrase that names the change), then the
mentions are put into one of four styles:

* ``terse`` (FashionIQ's shortest): the bare phrases, "crimson", "not striped, shorter
  sleeves";
* ``relative`` (FashionIQ's usual form): verb phrases, "is crimson and has shorter sleeves",
  "is more scarlet", "is no longer striped";
* ``imperative``: one request, "Make it red and add polka dots.", "I want it with long
  sleeves";
* ``feedback`` (long, dialogue-like, as in SAC's claim about long feedback): an opening
  sentence, one sentence per change, sentences about what must stay the same (unchanged
  attributes named with their current values) and sometimes a closing sentence; always at
  least three sentences.

Every caption mentions every changed attribute: colours by a synonym of the target colour,
patterns by a word for the target pattern (or, when the target is plain, by negating the
reference's pattern: "not striped"), shapes by the target's value ("long sleeves") or a
comparative in the right direction ("longer sleeves"). :func:`mention_options` lists every
phrase allowed for a change; tests check captions against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cirbench_fashion_synth.products import CATEGORIES, Product

COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet", "cherry red"),
    "orange": ("orange", "tangerine", "pumpkin orange"),
    "yellow": ("yellow", "mustard", "lemon yellow", "golden"),
    "green": ("green", "emerald", "forest green", "kelly green"),
    "teal": ("teal", "turquoise", "petrol"),
    "blue": ("blue", "cobalt", "royal blue", "sapphire"),
    "purple": ("purple", "violet", "plum", "aubergine"),
    "pink": ("pink", "rose", "fuchsia", "blush pink"),
    "brown": ("brown", "chocolate", "coffee", "cognac"),
    "black": ("black", "jet black", "ebony", "onyx"),
    "white": ("white", "ivory", "snow white", "off-white"),
    "gray": ("gray", "grey", "slate", "ash grey"),
}
"""Colour -> the words a caption may use for it (the first is the plain name)."""

PATTERN_ADJ: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid", "solid-coloured", "unpatterned"),
    "striped": ("striped", "stripy"),
    "dotted": ("polka-dot", "dotted", "spotted"),
    "checked": ("checked", "checkered", "chequered", "gingham"),
    "zigzag": ("zigzag", "chevron"),
    "floral": ("floral", "flowery", "flower-print"),
}
PATTERN_NOUN: dict[str, tuple[str, ...]] = {
    "plain": ("no pattern", "a solid colour", "a plain finish"),
    "striped": ("stripes", "horizontal stripes"),
    "dotted": ("polka dots", "dots", "spots"),
    "checked": ("checks", "a checkerboard pattern", "a gingham print"),
    "zigzag": ("zigzags", "a chevron pattern", "a zigzag print"),
    "floral": ("flowers", "a floral print", "a flower pattern"),
}
PATTERN_BARE: dict[str, str] = {
    "striped": "stripes", "dotted": "dots", "checked": "checks", "zigzag": "zigzags", "floral": "flowers",
}
"""A patterned reference's pattern as a bare plural noun, for "remove the stripes"."""

# category -> value -> (adjective phrases, noun phrases); "is <adj>", "has <noun>"
SHAPE_WORDS: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "sleeves": {
        "sleeveless": (("sleeveless",), ("no sleeves",)),
        "short": (("short-sleeved",), ("short sleeves",)),
        "elbow": (("elbow-sleeved",), ("elbow-length sleeves", "three-quarter sleeves")),
        "long": (("long-sleeved",), ("long sleeves", "full-length sleeves")),
    },
    "skirt": {
        "mini": (("mini", "very short"), ("a mini length",)),
        "knee": (("knee-length",), ("a knee-length hem",)),
        "midi": (("midi", "mid-calf length"), ("a midi length",)),
        "maxi": (("maxi", "floor-length"), ("a maxi length", "a floor-length hem")),
    },
    "trousers": {
        "shorts": (("thigh-length", "cut above the knee"), ("short legs",)),
        "knee": (("knee-length", "bermuda-length"), ("knee-length legs",)),
        "cropped": (("cropped", "ankle-grazing"), ("cropped legs",)),
        "full": (("full-length",), ("full-length legs", "long legs")),
    },
    "shoe": {
        "flat": (("flat", "heelless"), ("no heel", "a flat sole")),
        "low": (("low-heeled",), ("a low heel", "a kitten heel")),
        "mid": (("mid-heeled",), ("a medium heel", "a mid heel")),
        "high": (("high-heeled",), ("a high heel", "a stiletto heel")),
    },
    "boot": {
        "ankle": (("ankle-high",), ("an ankle-height shaft",)),
        "mid-calf": (("mid-calf", "calf-high"), ("a mid-calf shaft",)),
        "knee-high": (("knee-high",), ("a knee-high shaft",)),
        "thigh-high": (("thigh-high", "over-the-knee"), ("a thigh-high shaft",)),
    },
}
# category -> direction (+1 more / -1 less) -> (adjective phrases, noun phrases)
COMPARATIVES: dict[str, dict[int, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "sleeves": {1: ((), ("longer sleeves", "more sleeve")), -1: ((), ("shorter sleeves", "less sleeve"))},
    "skirt": {1: (("longer",), ("a longer hem", "more length")), -1: (("shorter",), ("a shorter hem", "less length"))},
    "trousers": {1: (("longer",), ("longer legs",)), -1: (("shorter",), ("shorter legs",))},
    "shoe": {1: (("higher",), ("a higher heel", "a taller heel")), -1: (("flatter", "lower"), ("a lower heel",))},
    "boot": {1: (("taller", "higher"), ("a taller shaft", "a higher shaft")), -1: (("shorter", "lower"), ("a shorter shaft", "a lower shaft"))},
}
_SHAPE_TABLE = {"tshirt": "sleeves", "dress": "sleeves", "skirt": "skirt", "trousers": "trousers",
                "shoe": "shoe", "boot": "boot"}
ATTRIBUTE_NOUN = {"tshirt": "sleeves", "dress": "sleeves", "skirt": "length", "trousers": "length",
                  "shoe": "heel", "boot": "shaft"}
"""How captions name each category's shape attribute ("keep the sleeves")."""

CATEGORY_NOUNS: dict[str, tuple[str, ...]] = {
    "tshirt": ("t-shirt", "tee", "top", "shirt"),
    "dress": ("dress", "frock"),
    "skirt": ("skirt",),
    "trousers": ("trousers", "pants", "slacks"),
    "shoe": ("shoe", "pump", "court shoe"),
    "boot": ("boot",),
}

STYLES: tuple[str, ...] = ("terse", "relative", "imperative", "feedback")
STYLE_WEIGHTS: tuple[float, ...] = (0.3, 0.3, 0.2, 0.2)


@dataclass(frozen=True)
class Mention:
    """How a caption names one changed attribute: ``phrase`` is inserted verbatim.

    ``form``: ``adj`` (after "is" / "make it"), ``noun`` (after "has" / "add"), or ``neg``
    (``phrase`` is the *reference's* pattern adjective, negated: "not striped").
    """

    attribute: str
    phrase: str
    form: str

    def to_dict(self) -> dict[str, str]:
        return {"attribute": self.attribute, "phrase": self.phrase, "form": self.form}


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def mention_options(attribute: str, ref: Product, tgt: Product) -> list[tuple[str, str]]:
    """Every ``(phrase, form)`` a caption may use to name the change of ``attribute`` from
    ``ref`` to ``tgt``."""
    if attribute == "color":
        return [(w, "adj") for w in COLOR_WORDS[tgt.color]]
    if attribute == "pattern":
        out = [(w, "adj") for w in PATTERN_ADJ[tgt.pattern]] + [(w, "noun") for w in PATTERN_NOUN[tgt.pattern]]
        if tgt.pattern == "plain":
            out += [(w, "neg") for w in PATTERN_ADJ[ref.pattern]]
        return out
    if attribute == "shape":
        table = _SHAPE_TABLE[tgt.category]
        adjs, nouns = SHAPE_WORDS[table][tgt.shape]
        values = CATEGORIES[tgt.category].shape_values
        direction = 1 if values.index(tgt.shape) > values.index(ref.shape) else -1
        cadj, cnoun = COMPARATIVES[table][direction]
        return [(w, "adj") for w in adjs + cadj] + [(w, "noun") for w in nouns + cnoun]
    raise ValueError(f"unknown attribute {attribute!r}")


def make_mention(rng: np.random.Generator, attribute: str, ref: Product, tgt: Product) -> Mention:
    """One mention of the change, drawn from :func:`mention_options` (negations of a
    pattern and comparatives of a shape are drawn about half of the time)."""
    options = mention_options(attribute, ref, tgt)
    if attribute == "pattern" and tgt.pattern == "plain" and rng.random() < 0.5:
        options = [o for o in options if o[1] == "neg"]
    elif attribute == "shape":
        table = _SHAPE_TABLE[tgt.category]
        comparative = {w for pair in COMPARATIVES[table].values() for ws in pair for w in ws}
        use_cmp = rng.random() < 0.5
        options = [o for o in options if (o[0] in comparative) == use_cmp] or options
    phrase, form = _pick(rng, options)
    return Mention(attribute, phrase, form)


# ----------------------------------------------------------------------------- templates

_RELATIVE = {
    ("color", "adj"): ("is {p}", "is in {p}", "is more {p}", "has a {p} colour", "is {p} instead of {r}",
                       "comes in {p}", "{p}"),
    ("pattern", "adj"): ("is {p}", "is more {p}", "is a {p} one", "looks {p}"),
    ("pattern", "noun"): ("has {p}", "comes with {p}", "features {p}"),
    ("pattern", "neg"): ("is not {p}", "is no longer {p}", "isn't {p}"),
    ("shape", "adj"): ("is {p}", "is {p} instead", "looks {p}"),
    ("shape", "noun"): ("has {p}", "comes with {p}"),
}
_IMPERATIVE = {
    ("color", "adj"): ("make it {p}", "change the colour to {p}", "switch to {p}", "I want it in {p}",
                       "go for {p} instead of {r}", "use {p}", "change to {p}"),
    ("pattern", "adj"): ("make it {p}", "I want a {p} one", "change it to a {p} design"),
    ("pattern", "noun"): ("add {p}", "give it {p}", "I want it with {p}", "change to {p}"),
    ("pattern", "neg"): ("make it not {p}", "I don't want it {p}", "it should not be {p}"),
    ("shape", "adj"): ("make it {p}", "I want it {p}", "it should be {p}"),
    ("shape", "noun"): ("give it {p}", "I want it with {p}", "change to {p}", "it needs {p}"),
}
_TERSE = {
    ("color", "adj"): ("{p}", "{p}", "in {p}"),
    ("pattern", "adj"): ("{p}",),
    ("pattern", "noun"): ("with {p}", "{p}"),
    ("pattern", "neg"): ("not {p}", "no longer {p}"),
    ("shape", "adj"): ("{p}",),
    ("shape", "noun"): ("{p}", "with {p}"),
}
_OPENERS = (
    "I like this {n}, but it is not quite right.",
    "This {n} is close to what I am looking for.",
    "Almost there, but a few things need to change.",
    "Nice {n}, though I would like some changes.",
    "The overall style of this {n} is good.",
    "I am looking for something similar to this {n}.",
)
_KEEP = {
    "color": ("Keep the {v} colour.", "The {v} colour is fine as it is.", "Leave the colour {v}.",
              "I still want it in {v}."),
    "pattern_plain": ("Keep it {v}.", "It should stay plain, without any pattern."),
    "pattern": ("Keep the {v}.", "The {v} are fine.", "Do not remove the {v}."),
    "shape": ("Do not change the {a}.", "The {a} should stay the same.", "Leave the {a} unchanged.",
              "Keep the same {a}."),
}
_CLOSERS = (
    "Otherwise it is perfect.", "Everything else can stay the same.", "Thanks!", "That would be ideal.",
    "Other than that, I like it.",
)


def _fill(template: str, m: Mention, ref: Product) -> str:
    return template.format(p=m.phrase, r=_pick_ref_word(m, ref))


def _pick_ref_word(m: Mention, ref: Product) -> str:
    return COLOR_WORDS[ref.color][0] if m.attribute == "color" else ""


def _join(parts: list[str], rng: np.random.Generator) -> str:
    """"a", "a and b", "a, b and c" or "a, b, c"."""
    if len(parts) == 1 or rng.random() < 0.3:
        return ", ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _keep_sentence(rng: np.random.Generator, attribute: str, ref: Product) -> str:
    if attribute == "color":
        return _pick(rng, _KEEP["color"]).format(v=_pick(rng, COLOR_WORDS[ref.color]))
    if attribute == "pattern":
        if ref.pattern == "plain":
            return _pick(rng, _KEEP["pattern_plain"]).format(v=_pick(rng, PATTERN_ADJ["plain"]))
        return _pick(rng, _KEEP["pattern"]).format(v=PATTERN_BARE[ref.pattern])
    return _pick(rng, _KEEP["shape"]).format(a=ATTRIBUTE_NOUN[ref.category])


def make_caption(
    rng: np.random.Generator, ref: Product, tgt: Product, style: str | None = None
) -> tuple[str, str, list[Mention]]:
    """``(caption, style, mentions)`` describing ``tgt`` relative to ``ref`` (same category,
    at least one attribute different)."""
    if ref.category != tgt.category:
        raise ValueError(f"a caption relates products of one category, got {ref.category} / {tgt.category}")
    changed = ref.changed(tgt)
    if not changed:
        raise ValueError(f"reference and target are the same product {ref}")
    if style is None:
        style = STYLES[int(rng.choice(len(STYLES), p=STYLE_WEIGHTS))]
    order = [changed[i] for i in rng.permutation(len(changed))]
    mentions = [make_mention(rng, a, ref, tgt) for a in order]
    noun = _pick(rng, CATEGORY_NOUNS[ref.category])
    if style == "terse":
        parts = [_fill(_pick(rng, _TERSE[(m.attribute, m.form)]), m, ref) for m in mentions]
        text = _join(parts, rng)
        if rng.random() < 0.2:
            text = "make it " + text if mentions[0].form != "noun" else "now " + text
    elif style == "relative":
        parts = [_fill(_pick(rng, _RELATIVE[(m.attribute, m.form)]), m, ref) for m in mentions]
        if parts[0] == mentions[0].phrase:  # a bare colour leads: "red and has ..." -> "is red ..."
            parts[0] = "is " + parts[0]
        text = _join(parts, rng)
        prefix = _pick(rng, ("", "", "it ", f"the {noun} ", f"this {noun} but it "))
        text = prefix + text
    elif style == "imperative":
        parts = [_fill(_pick(rng, _IMPERATIVE[(m.attribute, m.form)]), m, ref) for m in mentions]
        text = _join(parts, rng)
        text = _sentence(text) if rng.random() < 0.5 else text
    elif style == "feedback":
        sentences = [_pick(rng, _OPENERS).format(n=noun)]
        sentences += [_sentence(_fill(_pick(rng, _IMPERATIVE[(m.attribute, m.form)]), m, ref)) for m in mentions]
        unchanged = [a for a in ("color", "pattern", "shape") if a not in changed]
        keep = [unchanged[i] for i in rng.permutation(len(unchanged))]
        sentences += [_keep_sentence(rng, a, ref) for a in keep]
        if not keep or rng.random() < 0.4:
            sentences.append(_pick(rng, _CLOSERS))
        text = " ".join(sentences)
    else:
        raise ValueError(f"unknown caption style {style!r}; expected one of {STYLES}")
    return text, style, mentions
