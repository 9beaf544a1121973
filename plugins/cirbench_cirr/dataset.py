"""The ``cirr`` and ``cirr-subset`` datasets: CIRR read from its canonical layout (docs/papers.md
§1.7), identity hits on the hard target (§0 decision 2), evaluated on the validation split.

Layout (the CIRR release, branch ``cirr_dataset``; the dataset folder is the one holding
``cirr/``, ``train/`` and ``dev/``):

* ``<root>/cirr/captions/cap.rc2.{train,val}.json``: a JSON list of ``{"pairid",
  "reference", "target_hard", "target_soft": {name: score}, "caption", "img_set": {"id",
  "members": [6 names], ...}}``;
* ``<root>/cirr/image_splits/split.rc2.{train,val}.json``: a JSON dict image name ->
  path relative to the root (``./dev/dev-245-2-img1.png``, ``./train/34/...png``).

``test1`` has no public targets (its metrics come from the CIRR server), so evaluation runs on
``val``. The test1 files (``cap.rc2.test1.json``, ``split.rc2.test1.json``, ``test1/...png``)
are read only by :meth:`CirrDataset.hidden_split` for ``cirbench export``, which writes the
server's two JSON files (``{"version": "rc2", "metric": "recall" | "recall_subset",
"<pairid>": [top-50 | top-3 image names]}``, at most 5 MB each: CIRR's Test-split_server.md).

``cirr`` (Recall@K):

* training triplets: every train pair, reference + caption -> ``target_hard``;
* test queries: every val pair, one correct target, ``target_hard``;
* gallery: every image of ``split.rc2.val.json``; the reference is removed from its own
  ranking (the evaluator's rule; CIRR sets its score to the row minimum, the same thing).

``cirr-subset`` (Recall_subset@K): the same pairs, each query ranked among the members of its
``img_set`` other than its reference (five images) -- :attr:`cirbench.Query.candidates`, so
the gallery is embedded once. A member list without the target is an annotation error.

Soft targets: CIRR's validation code credits a top-K hit with the best ``target_soft`` score
among the retrieved images (1.0, 0.5, 0.2; -1.0 never counts; docs/papers.md §1.7). Decision 2
fixes identity hits for CIRR, so the metrics count ``target_hard`` only; the soft targets are
kept, by image id, in :attr:`CirrDataset.soft_targets` (one dict per query) for analysis, and
training uses ``target_hard`` only. A pair whose reference is its hard target is left out
(counted in ``describe()``).

Images: shorter side resized to the protocol's size, centre crop; loss
``batch_classification`` (as on the other identity-hit datasets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cirbench import (
    AnnotationError,
    DataLayout,
    ImageEntry,
    LocalImageDataset,
    PublishedCount,
    Query,
    Requirement,
    Triplet,
    read_json,
    read_json_records,
)

URL = "https://github.com/Cuberick-Orion/CIRR"
SPLITS = ("train", "val")


def captions_file(split: str) -> str:
    return f"cirr/captions/cap.rc2.{split}.json"


def split_file(split: str) -> str:
    return f"cirr/image_splits/split.rc2.{split}.json"


def read_split(root: Path, split: str) -> dict[str, str]:
    """Image name -> relative path, from ``split.rc2.{split}.json``."""
    rel = split_file(split)
    data = read_json(root, rel)
    if not isinstance(data, dict):
        raise AnnotationError(rel, f"expected a JSON object (image name -> path), got {type(data).__name__}")
    for name, path in data.items():
        if not isinstance(path, str) or not path.strip():
            raise AnnotationError(rel, f"image {name!r}: the path is not a non-empty string")
    return data


def read_pairs(root: Path, split: str) -> list[dict]:
    """The entries of ``cap.rc2.{split}.json``, checked: ``reference``, ``target_hard`` and
    ``caption`` non-empty strings, ``target_soft`` an object of numbers (may be absent),
    ``img_set.members`` a list of names. Raises :class:`AnnotationError` naming the file, the
    entry and the field."""
    rel = captions_file(split)
    out = []
    for n, item in enumerate(read_json_records(root, rel)):
        where = f"entry {n} (pairid {item.get('pairid', '?')})"
        for key in ("reference", "target_hard", "caption"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise AnnotationError(rel, f"{where}: field {key!r} missing or not a non-empty string")
        soft = item.get("target_soft", {})
        if not isinstance(soft, dict) or not all(isinstance(v, (int, float)) for v in soft.values()):
            raise AnnotationError(rel, f"{where}: field 'target_soft' is not an object of scores")
        img_set = item.get("img_set")
        members = img_set.get("members") if isinstance(img_set, dict) else None
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise AnnotationError(rel, f"{where}: field 'img_set.members' missing or not a list of names")
        out.append(item)
    return out


class CirrLayout(DataLayout):
    """CIRR's files (docs/papers.md §1.7); ``data verify`` compares the validation pair and image
    counts with the published ones."""

    folder = "cirr"
    url = URL
    train_files = captions_file("train")
    test_files = captions_file("val")
    requirements = (
        *(Requirement(captions_file(s), f"{s} captions") for s in SPLITS),
        *(Requirement(split_file(s), f"{s} image list") for s in SPLITS),
        Requirement("train", "the training images", kind="dir"),
        Requirement("dev", "the validation images", kind="dir"),
    )

    def image_entries(self, root: Path) -> list[ImageEntry]:
        return [ImageEntry(path, split_file(s)) for s in SPLITS for path in read_split(root, s).values()]

    def published_counts(self) -> list[PublishedCount]:
        src = "docs/papers.md §1.7"
        return [
            PublishedCount("val pairs", 4_181, lambda root: len(read_pairs(root, "val")), src),
            PublishedCount("val images", 2_297, lambda root: len(read_split(root, "val")), src),
            PublishedCount("train pairs", None, lambda root: len(read_pairs(root, "train")), src),
            PublishedCount("train images", None, lambda root: len(read_split(root, "train")), src),
        ]


class CirrDataset(LocalImageDataset):
    """``cirr``: Recall@K over the whole val gallery (see the module docstring).

    See docs/papers.md §1.7."""

    name = "cirr"
    version = 1
    base_loss = "batch_classification"
    layout = CirrLayout()
    transform_mode = "center_crop"
    #: True: rank each query among its image set's members (Recall_subset@K).
    subset = False

    def _id(self, split: str, paths: dict[str, str], name: str, field: str, n: int) -> int:
        if name not in paths:
            raise AnnotationError(captions_file(split), f"entry {n}: field {field!r}: image {name!r} is not in "
                                  f"{split_file(split)}")
        return self.index.add(paths[name], split_file(split))

    def load(self) -> None:
        self.skipped_self_pairs = 0
        train_paths = read_split(self.root, "train")
        triplets = []
        for n, p in enumerate(read_pairs(self.root, "train")):
            s = self._id("train", train_paths, p["reference"], "reference", n)
            t = self._id("train", train_paths, p["target_hard"], "target_hard", n)
            if s == t:
                self.skipped_self_pairs += 1
                continue
            triplets.append(Triplet(s, p["caption"].strip(), t))
        val_paths = read_split(self.root, "val")
        self.gallery_ids = np.asarray([self.index.add(path, split_file("val")) for path in val_paths.values()],
                                      dtype=np.int64)
        queries, soft = [], []
        for n, p in enumerate(read_pairs(self.root, "val")):
            s = self._id("val", val_paths, p["reference"], "reference", n)
            t = self._id("val", val_paths, p["target_hard"], "target_hard", n)
            if s == t:
                self.skipped_self_pairs += 1
                continue
            candidates = None
            if self.subset:
                members = [self._id("val", val_paths, m, "img_set.members", n) for m in p["img_set"]["members"]]
                if t not in members:
                    raise AnnotationError(captions_file("val"), f"entry {n}: field 'img_set.members' lacks the "
                                          f"target {p['target_hard']!r}")
                candidates = tuple(dict.fromkeys(m for m in members if m != s))
            queries.append(Query(s, p["caption"].strip(), (t,), candidates=candidates))
            soft.append({self._id("val", val_paths, name, "target_soft", n): float(score)
                         for name, score in p.get("target_soft", {}).items()})
        self.triplets = triplets
        self.test_queries = queries
        self.soft_targets: list[dict[int, float]] = soft

    def hidden_split(self, cache_dir: Path | None = None):
        """The ``test1`` split for CIRR's server (:func:`build_hidden_split`); evaluation
        never sees it (its queries have no targets)."""
        return build_hidden_split(self, cache_dir)

    def describe(self) -> dict:
        d = super().describe()
        scores: dict[str, int] = {}
        for s in self.soft_targets:
            for v in s.values():
                scores[f"{v:g}"] = scores.get(f"{v:g}", 0) + 1
        d.update(
            metric="Recall_subset@K: ranked among the image set's members other than the reference"
            if self.subset else "Recall@K: ranked against every val image, the reference removed",
            hits="target_hard (identity); target_soft kept for analysis only",
            soft_target_scores=dict(sorted(scores.items())),
            skipped_self_pairs=self.skipped_self_pairs,
        )
        return d


class CirrSubsetDataset(CirrDataset):
    """``cirr-subset``: Recall_subset@K, each query ranked among its image set's members.

    See docs/papers.md §1.7."""

    name = "cirr-subset"
    subset = True


# --- the hidden test split (test1): predictions for CIRR's evaluation server ---------------------

HIDDEN_SPLIT = "test1"
#: the server's limit on an uploaded file (CIRR's Test-split_server.md: "Maximum 5MB")
SERVER_MAX_BYTES = 5_000_000
#: top-K the server reads: 50 for Recall@K, 3 for Recall_subset@K (Test-split_server.md)
SERVER_TOP_K = {"recall": 50, "recall_subset": 3}


def read_test_pairs(root: Path) -> list[dict]:
    """The entries of ``cap.rc2.test1.json`` (no targets), checked: ``pairid`` an integer,
    ``reference`` and ``caption`` non-empty strings, ``img_set.members`` a list of names.
    Raises :class:`AnnotationError` naming the file, the entry and the field."""
    rel = captions_file(HIDDEN_SPLIT)
    out = []
    for n, item in enumerate(read_json_records(root, rel)):
        where = f"entry {n} (pairid {item.get('pairid', '?')})"
        if not isinstance(item.get("pairid"), int) or isinstance(item.get("pairid"), bool):
            raise AnnotationError(rel, f"entry {n}: field 'pairid' missing or not an integer")
        for key in ("reference", "caption"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise AnnotationError(rel, f"{where}: field {key!r} missing or not a non-empty string")
        img_set = item.get("img_set")
        members = img_set.get("members") if isinstance(img_set, dict) else None
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise AnnotationError(rel, f"{where}: field 'img_set.members' missing or not a list of names")
        out.append(item)
    if len({p["pairid"] for p in out}) != len(out):
        raise AnnotationError(rel, "a pairid occurs twice")
    return out


class CirrTest1Images(LocalImageDataset):
    """The images of ``test1`` (every image of ``split.rc2.test1.json``), by id, decoded and
    cached apart from the train/val images; it has no training triplets and no test queries
    (its queries have no targets: :meth:`CirrDataset.hidden_split`)."""

    name = "cirr-test1"
    version = 1
    base_loss = "batch_classification"
    layout = CirrLayout()
    transform_mode = "center_crop"

    def load(self) -> None:
        paths = read_split(self.root, HIDDEN_SPLIT)
        self.names = list(paths)
        self.gallery_ids = np.asarray([self.index.add(path, split_file(HIDDEN_SPLIT)) for path in paths.values()],
                                      dtype=np.int64)


def build_hidden_split(self: "CirrDataset", cache_dir: Path | None = None):
    """CIRR's ``test1``: one query per pair (reference + caption), ranked over every test1
    image for ``recall`` (top 50) and among the other members of its image set for
    ``recall_subset`` (top 3); written as the two JSON files the server takes
    (:func:`write_server_files`). Raises :class:`AnnotationError` for bad annotations."""
    from cirbench import HiddenQuery, HiddenSplit, Ranking

    for rel in (captions_file(HIDDEN_SPLIT), split_file(HIDDEN_SPLIT)):
        if not (self.root / rel).is_file():
            raise AnnotationError(rel, f"missing: the test1 files of {URL} are needed for an export")
    images = CirrTest1Images(self.root, self.protocol, cache_dir)
    ids = dict(zip(images.names, images.gallery_ids.tolist()))
    rel = captions_file(HIDDEN_SPLIT)
    queries = []
    for n, p in enumerate(read_test_pairs(self.root)):
        for field_name, names in (("reference", [p["reference"]]), ("img_set.members", p["img_set"]["members"])):
            missing = [m for m in names if m not in ids]
            if missing:
                raise AnnotationError(rel, f"entry {n}: field {field_name!r}: image {missing[0]!r} is not in "
                                      f"{split_file(HIDDEN_SPLIT)}")
        ref = ids[p["reference"]]
        members = tuple(dict.fromkeys(ids[m] for m in p["img_set"]["members"] if ids[m] != ref))
        queries.append(HiddenQuery(str(p["pairid"]), ref, (p["caption"].strip(),), "all", members))
    return HiddenSplit(
        dataset=self.name, name=HIDDEN_SPLIT, images=images, queries=queries,
        galleries={"all": images.gallery_ids}, image_names=dict(zip(images.gallery_ids.tolist(), images.names)),
        rankings=(Ranking("recall", SERVER_TOP_K["recall"]),
                  Ranking("recall_subset", SERVER_TOP_K["recall_subset"], among_candidates=True)),
        write=write_server_files,
    )


def server_file_name(metric: str) -> str:
    return f"cirr.{HIDDEN_SPLIT}.{metric}.json"


def write_server_files(split, rankings: dict[str, list[list[int]]], out_dir: Path) -> list[Path]:
    """``cirr.test1.recall.json`` and ``cirr.test1.recall_subset.json``: ``{"version":
    "rc2", "metric": ..., "<pairid>": [image names]}`` (CIRR's Test-split_server.md), checked
    by :func:`check_server_file` before anything is written."""
    files = []
    for metric, k in SERVER_TOP_K.items():
        obj: dict[str, object] = {"version": "rc2", "metric": metric}
        for q, top in zip(split.queries, rankings[metric]):
            obj[q.key] = [split.image_names[i] for i in top]
        check_server_file(server_file_name(metric), obj, split)
        files.append(obj)
    from cirbench import write_json_checked

    return [write_json_checked(out_dir / server_file_name(m), obj, SERVER_MAX_BYTES)
            for m, obj in zip(SERVER_TOP_K, files)]


def check_server_file(file: str, obj: dict, split) -> None:
    """A server file's checks: version ``rc2``, a known metric, one entry per test1 pairid and
    no other, each the metric's number of distinct names of the split, not the reference; for
    ``recall_subset`` each name a member of the query's image set. Raises
    :class:`cirbench.export.ExportFormatError` naming the file and the pairid."""
    from cirbench import ExportFormatError, check_ranked_names

    if obj.get("version") != "rc2":
        raise ExportFormatError(f"{file}: 'version' must be 'rc2', got {obj.get('version')!r}")
    metric = obj.get("metric")
    if metric not in SERVER_TOP_K:
        raise ExportFormatError(f"{file}: 'metric' must be one of {sorted(SERVER_TOP_K)}, got {metric!r}")
    keys = {k for k in obj if k not in ("version", "metric")}
    expected = {q.key for q in split.queries}
    if keys != expected:
        extra, lacking = sorted(keys - expected), sorted(expected - keys)
        raise ExportFormatError(f"{file}: pairids differ from {captions_file(HIDDEN_SPLIT)}: "
                                f"{len(lacking)} missing {lacking[:3]}, {len(extra)} unknown {extra[:3]}")
    every = frozenset(split.image_names.values())
    for q in split.queries:
        names = obj[q.key]
        allowed = every if metric == "recall" else frozenset(split.image_names[i] for i in q.candidates)
        check_ranked_names(file, q.key, names, SERVER_TOP_K[metric], allowed)
        if split.image_names[q.reference] in names:
            raise ExportFormatError(f"{file}: query {q.key}: its reference is among its predictions")
