"""The hooks a cirbench plugin implements. This page is all a plugin author needs to read.

A plugin is a Python module (or object) registered under the entry-point group ``cirbench``
in its distribution's ``pyproject.toml``::

    [project.entry-points.cirbench]
    my-method = "my_package.cirbench_plugin"

The module implements any of the hooks below with ``@cirbench.hookimpl``. Every hook is
called once when the registry is built (``cirbench list``, ``run``, ``check``); each
returns a list, and the registry merges the lists of all plugins. Names must be unique
across all plugins: a clash is an error naming both plugins and their distributions.
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
    :class:`cirbench.DatasetSpec` (``name``, ``build``, ``description``). ``build(protocol,
    cache_dir)`` must return a :class:`cirbench.CIRDataset` at the protocol's
    ``dataset_scale`` and ``image_size``; it is only called when the dataset is used, so
    keep it lazy (no loading at import or in this hook). A dataset read from a local folder
    also sets ``layout`` (a :class:`cirbench.data.DataLayout`) and takes the folder as a third
    argument, ``build(protocol, cache_dir, root)``; subclass
    :class:`cirbench.data.LocalImageDataset` and return ``MyDataset.dataset_spec(...)``.
    """


@hookspec
def cirbench_composers() -> list[ComposerSpec]:
    """Contribute composers (models).

    Called once per registry build, with no arguments. Return a list of
    :class:`cirbench.ComposerSpec` (``name``, ``build``, ``description``, ``paper``).
    ``build(ctx)`` receives a :class:`cirbench.ComposerContext` and returns a
    :class:`cirbench.Composer`; build the image encoder with
    :func:`cirbench.encoders.build_image_backbone` so it follows the protocol.
    """


@hookspec
def cirbench_protocols() -> list[Protocol]:
    """Contribute protocol presets.

    Called once per registry build, with no arguments. Return a list of frozen
    :class:`cirbench.Protocol` objects. A protocol's name is public: once results are
    published under it, change it only by bumping ``version``.
    """
