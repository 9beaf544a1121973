"""Tiny copies of the real datasets, written in exactly their canonical on-disk layouts
(docs/papers.md §1.1-1.3): PNG/JPEG images made with PIL, the annotation files, and for CSS a
NumPy file holding a Python-2-style pickle."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: tuple[int, int] = (20, 14), fmt: str | None = None) -> Path:
    """A small RGB image with a seed-dependent pattern (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[...] = rng.integers(0, 256, 3)
    arr[: size[1] // 2, : size[0] // 2] = rng.integers(0, 256, 3)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def corrupt(path: Path) -> None:
    """Truncate an image file so it no longer decodes."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


# --- a Python-2-style pickle ---------------------------------------------------------------------
class _Py2Pickler(pickle._Pickler):
    """Writes ``str`` as Python 2 wrote its byte strings (BINSTRING opcodes), so the file needs
    ``encoding='latin1'`` (or ASCII) to load under Python 3, like TIRG's CSS file."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: str) -> None:
        data = obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str


def save_py2_npy(path: Path, obj: object) -> None:
    """``np.save`` of a 0-d object array around ``obj``, pickled Python-2 style (protocol 2)."""
    arr = np.empty((), dtype=object)
    arr[()] = obj
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    _Py2Pickler(buf, protocol=2).dump(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


# --- CSS (docs/papers.md §1.1) -----------------------------------------------------------------------
def _obj(shape, color, size, row, col):
    return {"shape": shape, "color": color, "size": size, "pos": [row, col]}


def css_content() -> dict:
    """Two splits of 6 scenes. Test images 4 and 5 are the same scene (shared label), so a
    query whose target is 4 also counts 5 as correct."""
    a = _obj("rectangle", "red", "large", 0.2, 0.2)
    b = _obj("circle", "blue", "small", 0.5, 0.8)
    c = _obj("triangle", "yellow", "small", 0.8, 0.5)
    d = _obj("circle", "gray", "large", 0.2, 0.8)
    train = {
        "objects_img": [[a], [a, b], [b], [a, c], [c], [a, b, c]],
        "labels": [0, 1, 2, 3, 4, 5],
        "mods": [
            {"from": [0, 2], "to": [1, 5], "to_str": "add small blue circle to middle-right"},
            {"from": [1, 3], "to": [2, 4], "to_str": "remove large red rectangle"},
            {"from": [0], "to": [3], "to_str": "add small yellow triangle to bottom-center"},
        ],
    }
    test = {
        "objects_img": [[d], [d, c], [c], [b, d], [b], [b]],
        "labels": [10, 11, 12, 13, 14, 14],
        "mods": [
            {"from": [0, 1], "to": [1, 2], "to_str": "add small yellow triangle to bottom-center"},
            {"from": [3], "to": [4], "to_str": "remove large gray circle"},
            {"from": [2], "to": [5], "to_str": "make bottom-center small yellow triangle blue"},
        ],
    }
    return {"train": train, "test": test}


def write_css(root: Path, images: bool = True) -> Path:
    from cirbench_css.reader import CSS_FILE

    content = css_content()
    save_py2_npy(root / CSS_FILE, content)
    if images:
        for split in ("train", "test"):
            for i in range(len(content[split]["objects_img"])):
                write_image(root / "images" / f"css_{split}_{i:06d}.png", seed=hash((split, i)) % 1000,
                            size=(24, 16))
    return root


# --- Fashion200k (docs/papers.md §1.2) ----------------------------------------------------------------
F200K_TRAIN = [  # (product id, caption as in the label file)
    ("100", "red floral dress"), ("101", "blue floral dress"), ("102", "red striped dress"),
    ("103", "blue striped dress"), ("104", "green maxi dress."),
]
F200K_TEST = [
    ("200", "black lace dress"), ("201", "white lace dress"), ("202", "black silk dress"),
    ("203", "white silk dress"),
]


def f200k_path(pid: str, view: int) -> str:
    return f"women/dresses/casual_and_day_dresses/{pid}/{pid}_{view}.jpeg"


def write_fashion200k(root: Path) -> Path:
    """Label files with two views per product, JPEG images, test_queries.txt, and the five
    category folders of the canonical layout (only ``dresses`` holds images here)."""
    for category in ("dresses", "jackets", "pants", "skirts", "tops"):
        (root / "women" / category).mkdir(parents=True, exist_ok=True)
    for split, items in (("train", F200K_TRAIN), ("test", F200K_TEST)):
        lines = []
        for k, (pid, caption) in enumerate(items):
            for view in (0, 1):
                p = f200k_path(pid, view)
                write_image(root / p, seed=int(pid) * 10 + view, size=(16, 24))
                lines.append(f"{p}\t0.{k}{view}\t{caption}\n")
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"dress_{split}_detect_all.txt").write_text("".join(lines))
    (root / "test_queries.txt").write_text(
        f"{f200k_path('200', 0)} {f200k_path('201', 1)}\n"
        f"{f200k_path('202', 1)} {f200k_path('200', 0)}\n"
        f"{f200k_path('203', 0)} {f200k_path('201', 0)}\n")
    return root


# --- MIT-States (docs/papers.md §1.3) -------------------------------------------------------------------
MIT_CLASSES = {  # folder -> number of images; apple is a training noun, clock and orange test nouns
    "red apple": 2, "green apple": 2, "sliced apple": 1,
    "broken clock": 2, "old clock": 1, "new clock": 1,
    "peeled orange": 1, "fresh orange": 2,
    "adj apple": 1,  # unannotated: skipped
}


def write_mit_states(root: Path) -> Path:
    for k, (folder, n) in enumerate(MIT_CLASSES.items()):
        for j in range(n):
            write_image(root / "images" / folder / f"img_{j}.jpg", seed=100 * k + j, size=(18, 12))
    write_image(root / "images" / "misc" / "x.jpg", seed=7)  # no space in the name: skipped
    return root


# --- FashionIQ (docs/papers.md §1.4) --------------------------------------------------------------------
FIQ_PAIRS = {  # category -> split -> [(candidate, target, captions)]
    "dress": {
        "train": [("DT0", "DT1", ["is red", "has long sleeves"]), ("DT1", "DT2", ["is shorter", "more casual"])],
        "val": [("DV0", "DV1", ["is blue", "has stripes"]), ("DV1", "DV2", ["is darker", " "]),
                ("DV3", "DV3", ["is the same", "is identical"])],  # a self pair: left out
    },
    "shirt": {
        "train": [("ST0", "ST1", ["has a collar", "is white"])],
        "val": [("SV0", "SV1", ["has buttons", "is plaid"]), ("SV2", "SV0", ["is green", "has a pocket"])],
    },
    "toptee": {
        "train": [("TT0", "TT1", ["has no sleeves", "is black"])],
        "val": [("TV0", "SV0", ["has a print", "is looser"]), ("TV1", "TV0", ["is pink", "has a logo"])],
    },
}
FIQ_EXTRA_SPLIT_IMAGES = {"train": "XT9", "val": "XV9"}  # listed in every split file, in no pair
FIQ_PNG = "SV1"  # stored as .png: the loader falls back to it


def write_fashioniq(root: Path) -> Path:
    """captions/cap.<cat>.<split>.json, image_splits/split.<cat>.<split>.json and
    images/<asin>.jpg; also a test captions file without targets (never read)."""
    import json

    seed = 0
    for cat, splits in FIQ_PAIRS.items():
        for split, pairs in splits.items():
            (root / "captions").mkdir(parents=True, exist_ok=True)
            (root / "image_splits").mkdir(parents=True, exist_ok=True)
            entries = [{"candidate": c, "target": t, "captions": caps} for c, t, caps in pairs]
            (root / "captions" / f"cap.{cat}.{split}.json").write_text(json.dumps(entries))
            asins = list(dict.fromkeys(a for c, t, _ in pairs for a in (c, t)))
            asins.append(FIQ_EXTRA_SPLIT_IMAGES[split])
            (root / "image_splits" / f"split.{cat}.{split}.json").write_text(json.dumps(asins))
            for a in asins:
                seed += 1
                write_image(root / "images" / f"{a}.{'png' if a == FIQ_PNG else 'jpg'}", seed, size=(18, 24))
    (root / "captions" / "cap.dress.test.json").write_text(
        json.dumps([{"candidate": "DX0", "captions": ["is longer", "is yellow"]}]))
    return root


# --- Shoes (docs/papers.md §1.5) --------------------------------------------------------------------------
def shoe(kind: str, k: int) -> str:
    return f"img_womens_{kind}_{k}.jpg"


SHOES_TRAIN = [shoe("clogs", k) for k in range(1, 5)]
SHOES_EVAL = [shoe("pumps", k) for k in range(1, 6)]  # pumps_5 is in no caption: gallery only
SHOES_CAPTIONS = [  # (reference, target, caption)
    (shoe("clogs", 1), shoe("clogs", 2), "is darker"),
    (shoe("clogs", 2), shoe("clogs", 3), "has higher heels"),
    (shoe("clogs", 3), shoe("clogs", 4), "is red"),
    (shoe("pumps", 1), shoe("pumps", 2), "is black"),
    (shoe("pumps", 3), shoe("pumps", 1), "has a strap"),
    (shoe("pumps", 2), shoe("pumps", 2), "is the same"),  # a self pair: left out
    (shoe("clogs", 1), shoe("pumps", 4), "is a pump"),  # crosses the splits: left out
]


def write_shoes(root: Path) -> Path:
    """relative_captions_shoes.json, the two name lists, and the images under the Attribute
    Discovery folders (attributedata/womens_<kind>/<n>/...), plus a non-``womens_`` image."""
    import json

    entries = [{"ImageName": t, "ReferenceImageName": r, "RelativeCaption": c} for r, t, c in SHOES_CAPTIONS]
    root.mkdir(parents=True, exist_ok=True)
    (root / "relative_captions_shoes.json").write_text(json.dumps(entries))
    (root / "train_im_names.txt").write_text("\n".join(SHOES_TRAIN) + "\n")
    (root / "eval_im_names.txt").write_text("\n".join(SHOES_EVAL) + "\n")
    for k, name in enumerate(SHOES_TRAIN + SHOES_EVAL):
        kind = name.split("_")[2]
        write_image(root / "attributedata" / f"womens_{kind}" / str(k % 2) / name, 500 + k, size=(22, 16))
    write_image(root / "attributedata" / "mens_boots" / "0" / shoe("pumps", 1), 999)  # not womens_*: ignored
    return root


# --- Birds-to-Words (docs/papers.md §1.6) ------------------------------------------------------------------
def b2w_url(k: int) -> str:
    return f"https://static.inaturalist.org/photos/{k}/medium.jpg?1530{k}"


def b2w_path(k: int) -> str:
    return f"images/static.inaturalist.org/photos/{k}/medium.jpg"


B2W_ROWS = [  # (image 1, image 2, split, description)
    (1, 2, "train", "animal1 has a longer beak than animal2"),
    (1, 2, "train", "the first bird is browner"),
    (3, 4, "train", "animal1 is smaller with a red crest"),
    (5, 6, "val", "animal2 has white wing bars"),
    (10, 11, "test", "animal2 has a darker head and a shorter tail"),
    (10, 11, "test", "the second bird is grayer"),
    (12, 10, "test", "animal2 has a longer neck"),
    (13, 13, "test", "they are the same"),  # a self pair: left out (its image stays in the gallery)
]


def write_birds_to_words(root: Path, header: bool = True) -> Path:
    """birds-to-words-v1.0.tsv (11 columns) and the images at images/<host>/<path of the URL>."""
    cols = ["img1ObservationURL", "img1ImgURL", "img1Species", "img1Selection", "img2ObservationURL",
            "img2ImgURL", "img2Species", "img2Selection", "split", "annN", "description"]
    lines = ["\t".join(cols)] if header else []
    for n, (a, b, split, text) in enumerate(B2W_ROWS):
        lines.append("\t".join([f"https://www.inaturalist.org/observations/{a}", b2w_url(a), "Sparrow", "0",
                                f"https://www.inaturalist.org/observations/{b}", b2w_url(b), "Finch", "1",
                                split, str(n % 5 + 1), text]))
    root.mkdir(parents=True, exist_ok=True)
    (root / "birds-to-words-v1.0.tsv").write_text("\n".join(lines) + "\n")
    for k in sorted({x for a, b, _, _ in B2W_ROWS for x in (a, b)}):
        write_image(root / b2w_path(k), 700 + k, size=(20, 20))
    return root


# --- CIRR (docs/papers.md §1.7) -------------------------------------------------------------------------------
CIRR_VAL = [f"dev-{k}-img" for k in range(8)]
CIRR_TRAIN = [f"train-{k}-img" for k in range(6)]


def cirr_pairs(split: str) -> list[dict]:
    """Train: three pairs; val: two pairs and a self pair (left out)."""
    if split == "train":
        names = CIRR_TRAIN
        return [{"pairid": k, "reference": names[2 * k], "target_hard": names[2 * k + 1],
                 "target_soft": {names[2 * k + 1]: 1.0}, "caption": f"train change {k}",
                 "img_set": {"id": k, "members": names, "reference_rank": 2 * k, "target_rank": 2 * k + 1}}
                for k in range(3)]
    v = CIRR_VAL
    return [
        {"pairid": 100, "reference": v[0], "target_hard": v[1],
         "target_soft": {v[1]: 1.0, v[2]: 0.5, v[3]: -1.0}, "caption": "show two dogs instead",
         "img_set": {"id": 7, "members": v[0:6], "reference_rank": 0, "target_rank": 1}},
        {"pairid": 101, "reference": v[6], "target_hard": v[2],
         "target_soft": {v[2]: 1.0, v[7]: 0.2}, "caption": "make it night",
         "img_set": {"id": 8, "members": [v[6], v[7], v[2], v[3], v[4], v[5]], "reference_rank": 0,
                     "target_rank": 2}},
        {"pairid": 102, "reference": v[3], "target_hard": v[3], "target_soft": {v[3]: 1.0},
         "caption": "keep it", "img_set": {"id": 9, "members": v[2:8], "reference_rank": 1, "target_rank": 1}},
    ]


def cirr_image_path(name: str) -> str:
    if name.startswith("dev"):
        return f"./dev/{name}.png"
    return f"./train/{int(name.split('-')[1]) % 2}/{name}.png"


def write_cirr(root: Path) -> Path:
    """cirr/captions/cap.rc2.<split>.json, cirr/image_splits/split.rc2.<split>.json and the
    PNG images at the relative paths the split files give (train/<n>/..., dev/...)."""
    import json

    for split, names in (("train", CIRR_TRAIN), ("val", CIRR_VAL)):
        (root / "cirr" / "captions").mkdir(parents=True, exist_ok=True)
        (root / "cirr" / "image_splits").mkdir(parents=True, exist_ok=True)
        (root / "cirr" / "captions" / f"cap.rc2.{split}.json").write_text(json.dumps(cirr_pairs(split)))
        (root / "cirr" / "image_splits" / f"split.rc2.{split}.json").write_text(
            json.dumps({n: cirr_image_path(n) for n in names}))
        for k, n in enumerate(names):
            write_image(root / cirr_image_path(n), 800 + 10 * (split == "val") + k, size=(24, 18))
    return root


# --- hidden test splits (no targets): CIRR test1, FashionIQ test ------------------------------------
CIRR_TEST1 = [f"test1-{k}-{k % 4}-img{k % 2}" for k in range(56)]


def write_cirr_test1(root: Path, n_pairs: int = 7) -> Path:
    """cirr/captions/cap.rc2.test1.json (pairid, reference, caption, img_set; no targets),
    cirr/image_splits/split.rc2.test1.json and 56 PNGs under test1/: more than the server's
    top 50. Pair k's image set is 6 consecutive images, the reference among them."""
    import json

    names = CIRR_TEST1
    pairs = []
    for k in range(n_pairs):
        members = names[6 * k: 6 * k + 6]
        pairs.append({"pairid": 12000 + k, "reference": members[k % 6], "caption": f"test change {k}",
                      "img_set": {"id": k, "members": members, "reference_rank": k % 6}})
    (root / "cirr" / "captions").mkdir(parents=True, exist_ok=True)
    (root / "cirr" / "image_splits").mkdir(parents=True, exist_ok=True)
    (root / "cirr" / "captions" / "cap.rc2.test1.json").write_text(json.dumps(pairs))
    (root / "cirr" / "image_splits" / "split.rc2.test1.json").write_text(
        json.dumps({n: f"./test1/{n}.png" for n in names}))
    for k, n in enumerate(names):
        write_image(root / "test1" / f"{n}.png", 5000 + k, size=(12, 10))
    return root


FIQ_TEST_IMAGES = 52  # per category: more than the starter kit's top 50


def write_fashioniq_test(root: Path) -> Path:
    """captions/cap.<cat>.test.json (candidate, captions; no targets), image_splits/
    split.<cat>.test.json (52 asins each) and their images."""
    import json

    for ci, cat in enumerate(("dress", "shirt", "toptee")):
        asins = [f"{cat[0].upper()}T{k}" for k in range(FIQ_TEST_IMAGES)]
        entries = [{"candidate": asins[k], "captions": [f"is colour {k}", f"has pattern {k}"]} for k in range(3)]
        (root / "captions" / f"cap.{cat}.test.json").write_text(json.dumps(entries))
        (root / "image_splits" / f"split.{cat}.test.json").write_text(json.dumps(asins))
        for k, a in enumerate(asins):
            write_image(root / "images" / f"{a}.jpg", 7000 + 100 * ci + k, size=(10, 12))
    return root


def isolate_data_env(monkeypatch) -> None:
    """What every local-data test starts from: no progress bars, no data location taken from
    the user's environment (``$CIRBENCH_DATA`` and every ``$CIRBENCH_DATA_<NAME>``), one torch
    thread."""
    import os

    import torch

    monkeypatch.setenv("CIRBENCH_NO_PROGRESS", "1")
    for var in [v for v in os.environ if v == "CIRBENCH_DATA" or v.startswith("CIRBENCH_DATA_")]:
        monkeypatch.delenv(var, raising=False)
    torch.set_num_threads(1)
