"""Plugin discovery: built-ins first, then every entry point in the group ``vaebench``.

Each plugin's hooks are called one plugin at a time, so every registration is attributed to
its owner and a broken plugin is dropped as a whole (its partial registrations discarded)
without taking the others down.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from vaebench import hookspecs
from vaebench.errors import ConfigError, PluginError

BUILTIN_MODULES: tuple[str, ...] = ("vaebench.plugins.builtins",)

HOOK_PREFIX = "vaebench_register_"
# Component kinds come from the hookspecs, in their order: vaebench_register_priors -> "prior".
KINDS: dict[str, str] = {
    hook.removeprefix(HOOK_PREFIX).removesuffix("s"): hook
    for hook in vars(hookspecs)
    if hook.startswith(HOOK_PREFIX)
}

STRICT_ENV = "VAEBENCH_STRICT_PLUGINS"


@dataclass(frozen=True)
class Owner:
    """Where a component came from: the distribution, its version and the plugin object's name."""

    distribution: str
    version: str
    plugin: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} ({self.plugin})"


@dataclass(frozen=True)
class Component:
    """A registered name; ``target`` is the factory or its ``"module:attr"`` import path."""

    kind: str
    name: str
    target: Callable[..., Any] | str
    owner: Owner

    @property
    def factory(self) -> Callable[..., Any]:
        """The factory, imported on first use when registered by path."""
        return self.target if callable(self.target) else _import(self)


@functools.cache
def _import(component: Component) -> Callable[..., Any]:
    module, _, attr = str(component.target).partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise PluginError(
            f"{component.kind} '{component.name}' from {component.owner}: cannot import "
            f"{component.target} ({type(exc).__name__}: {exc})"
        ) from None
    if not callable(factory):
        raise PluginError(
            f"{component.kind} '{component.name}': {component.target} is not callable"
        )
    return factory


def _own_version() -> str:
    try:
        return metadata.version("vaebench")
    except metadata.PackageNotFoundError:
        return "unknown"


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


class Registry:
    """All components known to this process, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self.warnings: list[str] = []

    # -- loading -------------------------------------------------------------------------
    def add_plugin(self, plugin: object, owner: Owner) -> None:
        """Register one plugin object and collect its components; all or nothing."""
        try:
            self.pm.register(plugin, name=owner.plugin)
            staged = self._collect(plugin, owner)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # sys.exit() or any BaseException in a plugin: isolated
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._fail(owner, exc)
            return
        for component in staged:
            existing = self.components[component.kind].get(component.name)
            if existing is not None:
                self.pm.unregister(plugin)
                raise PluginError(
                    f"{component.kind} '{component.name}' is registered twice: by {existing.owner} "
                    f"and by {owner}; uninstall or rename one of them"
                )
        for component in staged:
            self.components[component.kind][component.name] = component

    def _collect(self, plugin: object, owner: Owner) -> list[Component]:
        staged: list[Component] = []
        seen: set[tuple[str, str]] = set()
        for kind, hook_name in KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin is not plugin:
                    continue

                def register(name: str, factory: Callable[..., Any], _kind: str = kind) -> None:
                    if not isinstance(name, str) or not name or "," in name:
                        raise ValueError(
                            f"invalid {_kind} name {name!r}: use a non-empty string without commas"
                        )
                    path = isinstance(factory, str) and re.fullmatch(r"[\w.]+:\w+", factory)
                    if not (callable(factory) or path):
                        raise TypeError(
                            f"{_kind} '{name}': factory {factory!r} is neither callable "
                            "nor a 'module:attr' import path"
                        )
                    if (_kind, name) in seen:
                        raise ValueError(f"{_kind} '{name}' registered twice by the same plugin")
                    seen.add((_kind, name))
                    staged.append(Component(_kind, name, factory, owner))

                impl.function(register=register)
        return staged

    def _fail(self, owner: Owner, exc: BaseException) -> None:
        line = (
            f"plugin '{owner.plugin}' from {owner.distribution} {owner.version} failed to load: "
            f"{type(exc).__name__}: {exc}"
        ).replace("\n", " ")
        if _strict():
            raise PluginError(line + f" ({STRICT_ENV} is set)") from exc
        self.warnings.append(line + f"; skipped (set {STRICT_ENV}=1 to make this fatal)")

    def load_builtins(self) -> None:
        version = _own_version()
        for module_name in BUILTIN_MODULES:
            module = importlib.import_module(module_name)
            self.add_plugin(module, Owner("vaebench", version, module_name))

    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        if entry_points is None:
            entry_points = metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP)
        seen: set[tuple[str, str]] = set()
        for ep in entry_points:
            dist = getattr(ep, "dist", None)
            owner = Owner(
                dist.name if dist is not None else "<unknown distribution>",
                dist.version if dist is not None else "?",
                ep.name,
            )
            # The same distribution can be visible twice on sys.path (e.g. editable + site).
            key = (owner.distribution, ep.value)
            if key in seen:
                continue
            seen.add(key)
            try:
                plugin = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a plugin that calls sys.exit() at import included
                self._fail(owner, exc)
                continue
            self.add_plugin(plugin, owner)

    # -- lookup --------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> Component:
        try:
            return self.components[kind][name]
        except KeyError:
            available = ", ".join(self.names(kind)) or "none"
            raise ConfigError(f"unknown {kind} '{name}'; available: {available}") from None

    def families(self) -> list[str]:
        """Names usable with ``--plugins``: those with both an encoder and a decoder."""
        return sorted(set(self.components["encoder"]) & set(self.components["decoder"]))

    def rows(self, *, options: bool = False) -> list[dict[str, str]]:
        """One row per component; ``options``: with the option keys its factory declares
        (this imports every factory, torch included)."""
        rows = []
        for kind in KINDS:
            for c in sorted(self.components[kind].values(), key=lambda c: c.name):
                row = {
                    "kind": c.kind,
                    "name": c.name,
                    "distribution": c.owner.distribution,
                    "version": c.owner.version,
                    "plugin": c.owner.plugin,
                }
                if options:
                    row["options"] = declared_options(c)
                rows.append(row)
        return rows


# Positional parameters before a kind's options (vaebench.hookspecs): the rest are options.
OPTION_POSITIONS = {
    "encoder": 2, "decoder": 2, "prior": 1, "likelihood": 1, "dataset": 0, "model": 0,
    "optimizer": 1, "schedule": 1,
}  # fmt: skip


def declared_options(component: Component) -> str:
    """The option keys of a component's factory, in words ("–": none; "any": **kwargs)."""
    from vaebench.options import option_names

    if component.kind not in OPTION_POSITIONS:
        return ""
    try:
        names = option_names(component, OPTION_POSITIONS[component.kind])
    except (PluginError, TypeError, ValueError):
        return "?"
    return "any" if names is None else ", ".join(names) or "–"


def load_registry(*, entry_points: bool = True) -> Registry:
    """Built-ins, then third-party entry points; warnings are printed once, on stderr."""
    registry = Registry()
    registry.load_builtins()
    if entry_points:
        registry.load_entry_points()
    for line in registry.warnings:
        print(f"vaebench: warning: {line}", file=sys.stderr)
    return registry
