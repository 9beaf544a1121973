"""The plugin manager: built-ins and entry points through one pluggy ``PluginManager``.

:func:`load_registry` discovers every plugin registered under the entry-point group
``cirbench``, calls each hook of each plugin separately (so that a bad answer names its
plugin), checks the types and the uniqueness of names, and returns a :class:`Registry`.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from cirbench import builtin, hookspecs
from cirbench.composer import ComposerSpec
from cirbench.data.contract import DatasetSpec
from cirbench.protocol import Protocol

ENTRY_POINT_GROUP = "cirbench"


class PluginError(Exception):
    """A plugin failed to import, returned the wrong type, or clashed with another."""


class UnknownNameError(KeyError):
    """A dataset, composer or protocol name that no plugin provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class PluginOrigin:
    """Which plugin (and which distribution) provides a dataset, composer or protocol.

    (Not to be confused with :mod:`cirbench.provenance`, the facts of a run: versions,
    device, git commit.)"""

    plugin: str
    distribution: str = ""
    version: str = ""

    def __str__(self) -> str:
        if self.distribution:
            return f"plugin {self.plugin!r} (distribution {self.distribution} {self.version})"
        return f"plugin {self.plugin!r}"


@dataclass
class Registry:
    """Every dataset, composer and protocol that the loaded plugins provide, by name."""

    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    composers: dict[str, ComposerSpec] = field(default_factory=dict)
    protocols: dict[str, Protocol] = field(default_factory=dict)
    origins: dict[tuple[str, str], PluginOrigin] = field(default_factory=dict)
    distributions: dict[str, str] = field(default_factory=dict)

    def _get(self, kind: str, table: dict[str, Any], name: str) -> Any:
        if name not in table:
            valid = ", ".join(sorted(table)) or "(none)"
            raise UnknownNameError(f"unknown {kind} {name!r}; valid {kind}s: {valid}")
        return table[name]

    def dataset(self, name: str) -> DatasetSpec:
        return self._get("dataset", self.datasets, name)

    def composer(self, name: str) -> ComposerSpec:
        return self._get("composer", self.composers, name)

    def protocol(self, name: str) -> Protocol:
        return self._get("protocol", self.protocols, name)

    def provider(self, kind: str, name: str) -> PluginOrigin:
        """Which plugin provides the ``kind`` (``dataset``, ``composer``, ``protocol``)
        ``name``; KeyError when none does."""
        return self.origins[(kind, name)]


_HOOKS: tuple[tuple[str, str, type, str], ...] = (
    # (hook name, kind, expected item type, registry attribute)
    ("cirbench_datasets", "dataset", DatasetSpec, "datasets"),
    ("cirbench_composers", "composer", ComposerSpec, "composers"),
    ("cirbench_protocols", "protocol", Protocol, "protocols"),
)


def make_plugin_manager(
    entry_points: Iterable[md.EntryPoint] | None = None,
    extra_plugins: Iterable[tuple[str, object]] = (),
) -> tuple[pluggy.PluginManager, dict[str, PluginOrigin]]:
    """A plugin manager holding the built-in plugin, every entry point of the group
    ``cirbench`` (or the given ``entry_points``) and ``extra_plugins`` (name, object)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    origins: dict[str, PluginOrigin] = {}
    pm.register(builtin, name="cirbench")
    origins["cirbench"] = PluginOrigin("cirbench", "cirbench", _dist_version("cirbench"))
    eps = md.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else entry_points
    for ep in sorted(eps, key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        prov = PluginOrigin(ep.name, dist.name if dist else "", dist.version if dist else "")
        if ep.name in origins:
            raise PluginError(
                f"two plugins are named {ep.name!r}: {origins[ep.name]} and {prov}; "
                "entry-point names in the group 'cirbench' must be unique"
            )
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"{prov} failed to import ({ep.value}): {type(exc).__name__}: {exc}"
            ) from exc
        try:
            pm.register(plugin, name=ep.name)
        except Exception as exc:
            raise PluginError(f"{prov} could not be registered: {exc}") from exc
        origins[ep.name] = prov
    for name, plugin in extra_plugins:
        pm.register(plugin, name=name)
        origins[name] = PluginOrigin(name)
    return pm, origins


def load_registry(
    entry_points: Iterable[md.EntryPoint] | None = None,
    extra_plugins: Iterable[tuple[str, object]] = (),
) -> Registry:
    """Discover plugins and collect what they provide. Raises :class:`PluginError` with the
    plugin and distribution named when anything is wrong."""
    pm, origins = make_plugin_manager(entry_points, extra_plugins)
    reg = Registry()
    for prov in origins.values():
        if prov.distribution:
            reg.distributions[prov.distribution] = prov.version
    for hook_name, kind, item_type, attr in _HOOKS:
        table: dict[str, Any] = getattr(reg, attr)
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            prov = origins.get(impl.plugin_name, PluginOrigin(impl.plugin_name))
            try:
                items = impl.function()
            except Exception as exc:
                raise PluginError(
                    f"{prov}: hook {hook_name} raised {type(exc).__name__}: {exc}"
                ) from exc
            if items is None:
                continue
            if not isinstance(items, (list, tuple)):
                raise PluginError(
                    f"{prov}: hook {hook_name} must return a list of {item_type.__name__}, "
                    f"got {type(items).__name__}"
                )
            for item in items:
                if not isinstance(item, item_type):
                    raise PluginError(
                        f"{prov}: hook {hook_name} returned a {type(item).__name__}, "
                        f"expected {item_type.__name__}"
                    )
                if not item.name or not isinstance(item.name, str):
                    raise PluginError(f"{prov}: hook {hook_name} returned a {kind} with no name")
                if item.name in table:
                    other = reg.origins[(kind, item.name)]
                    raise PluginError(
                        f"{kind} name {item.name!r} is provided twice: by {other} and by {prov}"
                    )
                table[item.name] = item
                reg.origins[(kind, item.name)] = prov
    return reg


def _dist_version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return ""
