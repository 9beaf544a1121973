"""The plugin contract of cirbench, indexed here; the hooks a plugin implements follow.

Each type and helper named below is exported by the package: import it ``from cirbench``
(the factory in ``cirbench.build`` is the engine's, not a plugin's). Where each is defined:

The hooks (this module), each returning a list:

* :func:`cirbench_composers` -> ``[ComposerSpec]``; :func:`cirbench_datasets` ->
  ``[DatasetSpec]``; :func:`cirbench_protocols` -> ``[Protocol]``; mark each implementation
  with ``@cirbench.hookimpl``.

Composers (``cirbench.composer``):

* ``ComposerSpec(name, build, description, paper, ablation_of)``: ``build(ctx)`` returns a
  ``Composer``;
* ``ComposerContext``: what ``build`` receives (protocol, training texts, base loss,
  dataset name, device, cache folder);
* ``Composer``: ``compose(images, texts) -> [B, D]``, ``embed_target(images) -> [B, D]``,
  ``training_loss(batch) -> {name: scalar}``; optional ``configure_optimizers``,
  ``training_step`` (with ``automatic_optimization = False``), ``attention_maps``
  (``supports_attention_maps`` tells);
* ``TrainBatch``: what ``training_loss`` receives (normalised images ``[B, 3, S, S]``, texts,
  image ids).

Datasets (``cirbench.data.contract``):

* ``DatasetSpec(name, build, description, layout)``: ``build(ctx)`` returns a ``CIRDataset``;
* ``DatasetContext``: what ``build`` receives (protocol, cache folder, the dataset's checked
  local folder ``root`` or None);
* ``CIRDataset``: images by integer id (``uint8 [N, 3, S, S]``), training triplets, test
  queries, galleries;
* ``Triplet(reference, text, target)``: one training example; ``Query(reference, text,
  targets, group, candidates)``: one test query (several correct ids, a group, optional
  candidate ids).

Protocols (``cirbench.protocol``): ``Protocol`` (frozen: data scale, image size,
backbone, embedding size, budget, K values, seeds; its hash names comparable results) and
``pretrained_preset`` (a paper-scale ``full-*`` preset).

Helpers a plugin may use (all exported by ``cirbench``):

* image and text encoders (``cirbench.encoders``), one module each for the image backbone,
  trainable text encoders and frozen sentence encoders: ``build_image_backbone`` (the protocol's backbone: build the image encoder with it),
  ``ImageEncoder``, ``LSTMTextEncoder``, ``Vocabulary``, ``SentenceEncoder`` (frozen);
* optimiser recipes (``cirbench.optim``): ``image_encoder_param_groups`` (TIRG's parameter
  groups; the protocol's default optimiser is ``protocol_optimizer``);
* losses (``cirbench.losses``): ``base_loss`` (the dataset's canonical loss by name),
  ``NormalizationLayer``;
* datasets read from a folder (``cirbench.data``): ``LocalImageDataset``, ``DataLayout``,
  ``Requirement``, ``PublishedCount``, ``ImageEntry``, ``DataLocations``, ``list_inside``,
  the strict annotation readers ``read_lines`` / ``read_tsv`` / ``read_json`` /
  ``read_json_records`` / ``check_name``, ``AnnotationError``, ``DatasetValidationError``,
  ``Problem``;
* caches (``cirbench.data.cache``): ``load_or_generate`` / ``generated_key`` (generated
  datasets), ``load_or_compute_embeddings`` / ``sources_fingerprint`` / ``texts_digest``
  (frozen text embeddings);
* hidden test splits (``cirbench.export``): ``HiddenSplit``, ``HiddenQuery``,
  ``Ranking``, ``write_json_checked``, ``check_ranked_names``, ``ExportFormatError``;
* attention maps (``cirbench.attention``): ``save_attention_overlays``.

How a run builds them (``cirbench.build``): ``build_dataset`` and ``build_composer``,
the one factory the runner and the conformance suite (``cirbench check``,
``cirbench.testing``) share.

A plugin is a Python module (or object) registered under the entry-point group ``cirbench``
in its distribution's ``pyproject.toml``::

    [project.entry-points.cirbench]
    my-method = "my_package.cirbench_plugin"

(a complete example package: ``examples/cirbench-mymethod/``). The module implements any of
the hooks below with ``@cirbench.hookimpl``. Every hook is called once when the registry is
built (``cirbench list``, ``run``, ``check``); each returns a list, and the registry merges
the lists of all plugins. Names must be unique across all plugins: a clash is an error
naming both plugins and their distributions.
"""

from __future__ import annotations

import pluggy

from cirbench.composer import ComposerSpec
from cirbench.data.contract import DatasetSpec
from cirbench.protocol import Protocol

PROJECT = "cirbench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cirbench_datasets() -> list[DatasetSpec]:
    """Contribute datasets.

    Called once per registry build, with no arguments. Return a list of
    :class:`cirbench.DatasetSpec` (``name``, ``build``, ``description``, and ``presets``: the
    protocol presets meant for it, which ``cirbench list`` shows). ``build(ctx)``
    receives a :class:`cirbench.DatasetContext` (``ctx.protocol``, ``ctx.cache_dir``,
    ``ctx.root``) and must return a :class:`cirbench.CIRDataset` at the protocol's
    ``dataset_scale`` and ``image_size``; it is only called when the dataset is used, so
    keep it lazy (no loading at import or in this hook). A ``build`` that requires more than
    one argument (the old ``build(protocol, cache_dir[, root])``) is refused when the spec is
    made, naming the dataset. A dataset read from a local folder also sets ``layout`` (a
    :class:`cirbench.DataLayout`) and finds its checked folder in ``ctx.root``; subclass
    :class:`cirbench.LocalImageDataset` and return ``MyDataset.dataset_spec(...)``.
    """


@hookspec
def cirbench_composers() -> list[ComposerSpec]:
    """Contribute composers (models).

    Called once per registry build, with no arguments. Return a list of
    :class:`cirbench.ComposerSpec` (``name``, ``build``, ``description``, ``paper``).
    ``build(ctx)`` receives a :class:`cirbench.ComposerContext` and returns a
    :class:`cirbench.Composer`; build the image encoder with
    :func:`cirbench.build_image_backbone` so it follows the protocol.
    """


@hookspec
def cirbench_protocols() -> list[Protocol]:
    """Contribute protocol presets.

    Called once per registry build, with no arguments. Return a list of frozen
    :class:`cirbench.Protocol` objects. A protocol's name is public: once results are
    published under it, change it only by bumping ``version``.
    """
