"""Protocol presets: frozen, hashed, validated."""

from __future__ import annotations

import dataclasses
import re

import pytest

from cirbench.protocol import BUILTIN_PROTOCOLS

BY_NAME = {p.name: p for p in BUILTIN_PROTOCOLS}


def test_presets_exist_and_hashes_are_distinct_and_short():
    assert {"smoke", "quick", "full"} <= set(BY_NAME)
    hashes = [p.hash for p in BUILTIN_PROTOCOLS]
    assert len(set(hashes)) == len(hashes)
    # the first 10 hex digits of a SHA-256, lower case (int(h, 16) >= 0 held for any hex string)
    assert all(re.fullmatch(r"[0-9a-f]{10}", h) for h in hashes), hashes


def test_protocol_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BY_NAME["quick"].iterations = 1  # type: ignore[misc]


def test_hash_is_stable_and_depends_on_numbers_only():
    q = BY_NAME["quick"]
    assert q.hash == dataclasses.replace(q).hash
    assert q.hash != dataclasses.replace(q, iterations=q.iterations + 1).hash
    assert q.hash != dataclasses.replace(q, version=q.version + 1).hash
    # speed/memory knobs and wording never change the numbers, so not the hash either
    assert q.hash == dataclasses.replace(q, eval_chunk=7, eval_batch_size=3, description="x").hash
    assert q.label == f"quick@{q.hash}"


@pytest.mark.parametrize(
    "field,value",
    [("dataset_scale", "huge"), ("batch_size", 0), ("iterations", 0), ("ks", (5, 1)), ("ks", ())],
)
def test_invalid_fields_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(BY_NAME["smoke"], **{field: value})


def test_pretrained_preset_fixes_the_shared_paper_settings():
    from cirbench import Protocol, pretrained_preset

    p = pretrained_preset("full-x", "a dataset's schedule", iterations=1000, ks=(1, 10), lr_decay_every=100)
    assert p == Protocol(name="full-x", version=1, description="a dataset's schedule", dataset_scale="full",
                         backbone="resnet18", pretrained=True, image_size=224, embed_dim=512, batch_size=32,
                         iterations=1000, weight_decay=1e-6, lr_decay_every=100, ks=(1, 10), seeds=(0, 1, 2))
    assert pretrained_preset("full-x", "other words", iterations=1000, ks=(1, 10), lr_decay_every=100).hash == p.hash
    assert pretrained_preset("full-x", "", iterations=1000, ks=(1, 10), weight_decay=5e-5).hash != p.hash


#: The hashes published before issue 11 added ``feature_stages`` and ``backbone_lr_mult``
#: (read from ``cirbench list`` before the change). Presets that keep those fields at their
#: defaults must keep these hashes: their results stay comparable.
PUBLISHED_HASHES = {
    "smoke": "d1fd9578a9",
    "full": "ec8cd4aed3",
    "full-fashion200k": "632ffe326d",
    "full-mit-states": "f093c83032",
    "full-fashioniq": "3d1dc49dbd",
    "full-shoes": "62cb93d1c2",
    "full-birds-to-words": "052fab44fd",
    "full-cirr": "7df1954afb",
    "full-cirr-subset": "a2d51babf4",
}


def test_presets_with_default_new_fields_keep_their_published_hashes():
    from cirbench.plugins import load_registry

    protocols = load_registry().protocols
    for name, digest in PUBLISHED_HASHES.items():
        p = protocols[name]
        assert p.feature_stages == ("layer3", "layer4") and p.backbone_lr_mult == 0.1, name
        assert p.hash == digest, f"{name}: {p.hash} != published {digest}"
    # the two presets issue 11 changed on purpose: new version, new hash
    css = protocols["full-css"]
    assert css.version == 2 and css.backbone_lr_mult == 1.0 and css.hash != "465529dc90"
    quick = protocols["quick"]
    assert quick.version == 3 and quick.feature_stages == ("layer2", "layer3")
    assert quick.seeds == (0, 1, 2) and quick.image_size == 32


def test_new_fields_change_the_hash_only_away_from_their_default():
    s = BY_NAME["smoke"]
    assert dataclasses.replace(s, feature_stages=("layer3", "layer4")).hash == s.hash
    assert dataclasses.replace(s, feature_stages=["layer3", "layer4"]).hash == s.hash  # list ok
    assert dataclasses.replace(s, feature_stages=("layer2", "layer3")).hash != s.hash
    assert dataclasses.replace(s, backbone_lr_mult=1.0).hash != s.hash
    assert dataclasses.replace(s, precision="fp32").hash == s.hash
    assert dataclasses.replace(s, precision="bf16").hash != s.hash
    assert "feature_stages" in s.as_dict()  # recorded with results even at the default
    assert s.as_dict()["precision"] == "fp32"


@pytest.mark.parametrize(
    "field,value",
    [("feature_stages", ("layer4", "layer3")), ("feature_stages", ("layer3",)),
     ("feature_stages", ("layer3", "layer5")), ("backbone_lr_mult", 0.0),
     ("backbone_lr_mult", 2.0), ("precision", "fp16"), ("precision", "BF16")],
)
def test_invalid_new_fields_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(BY_NAME["smoke"], **{field: value})


#: Every built-in preset's hash today (``cirbench list``, 2026-11-30), pinned: ``quick`` is
#: the committed leaderboard's (leaderboard/quick-d3a7f819ce--css-synth.md); issue 12 added
#: the fields ``optimizer``, ``lr``, ``momentum``, ``image_mean`` and ``image_std`` at
#: today's values and none of these may move.
CURRENT_HASHES = dict(PUBLISHED_HASHES, quick="d3a7f819ce", **{"full-css": "b75a6f2097"})


def test_every_builtin_preset_keeps_its_hash():
    from cirbench.plugins import load_registry

    protocols = load_registry().protocols
    assert set(CURRENT_HASHES) == set(protocols)  # a new preset is pinned here when added
    for name, digest in CURRENT_HASHES.items():
        assert protocols[name].hash == digest, f"{name}: {protocols[name].hash} != {digest}"


def test_optimizer_and_normalisation_defaults_are_the_engines_former_constants():
    s = BY_NAME["smoke"]
    # the values Composer.configure_optimizers and data/images.py hard-coded before issue 12
    assert (s.optimizer, s.lr, s.momentum) == ("sgd", 0.01, 0.9)
    assert s.image_mean == (0.485, 0.456, 0.406) and s.image_std == (0.229, 0.224, 0.225)
    d = s.as_dict()  # recorded with results even at the default, as JSON lists
    assert d["optimizer"] == "sgd" and d["image_mean"] == [0.485, 0.456, 0.406]


@pytest.mark.parametrize(
    "field,value",
    [("optimizer", "adam"), ("optimizer", "adamw"), ("lr", 0.02), ("momentum", 0.5),
     ("image_mean", (0.5, 0.5, 0.5)), ("image_std", (0.5, 0.5, 0.5)), ("image_mean", (0.485, 0.456, 0.407))],
)
def test_optimizer_and_normalisation_fields_change_the_hash_away_from_their_default(field, value):
    s = BY_NAME["smoke"]
    assert dataclasses.replace(s, **{field: value}).hash != s.hash


def test_optimizer_and_normalisation_fields_at_their_default_keep_the_hash_in_any_spelling():
    s = BY_NAME["smoke"]
    same = dataclasses.replace(s, optimizer="sgd", lr=0.01, momentum=0.9,
                               image_mean=[0.485, 0.456, 0.406], image_std=(0.229, 0.224, 0.225))
    assert same.hash == s.hash and same.image_mean == s.image_mean  # a list is kept as a tuple


@pytest.mark.parametrize(
    "field,value",
    [("optimizer", "rmsprop"), ("lr", 0.0), ("lr", -1.0), ("momentum", 1.0), ("momentum", -0.1),
     ("image_mean", (0.5, 0.5)), ("image_mean", "rgb"), ("image_mean", (0.5, float("nan"), 0.5)),
     ("image_std", (0.2, 0.0, 0.2)), ("image_std", (0.2, 0.2, 0.2, 0.2))],
)
def test_invalid_optimizer_and_normalisation_fields_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(BY_NAME["smoke"], **{field: value})
