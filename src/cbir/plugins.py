"""Methods from other packages: feature hashers and deep hashing losses registered as entry points.

A package registers a hasher (a subclass of :class:`cbir.hashing.BaseHasher`) in the entry-point
group ``cbir.hashers`` and a deep hashing loss (a subclass of :class:`cbir.deephash.base.HashLoss`)
in ``cbir.deephash``, e.g. in its ``pyproject.toml``::

    [project.entry-points."cbir.hashers"]
    rotation = "my_methods:RotationHasher"

A config then names it in ``hashing.methods`` like a built-in method (docs/plugins.md). This is the
one module that reads entry points. Names come from the installed packages' metadata, without
importing them; a plug-in's code is imported only when a config, a stage or a saved model names it,
and it must be installed: a model file names a method, never a module to import.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect

#: Entry-point groups: feature hashers and deep hashing losses.
HASHERS = "cbir.hashers"
LOSSES = "cbir.deephash"


class PluginError(ValueError):
    """A plug-in that cannot be used; the message names its entry point."""


@functools.cache
def entry_points(group: str) -> tuple[importlib.metadata.EntryPoint, ...]:
    """The installed entry points of ``group``. Cached for the process: after installing a plug-in
    into a running one, call ``entry_points.cache_clear()``."""
    return tuple(importlib.metadata.entry_points(group=group))


def names(group: str) -> tuple[str, ...]:
    """The names of ``group``'s plug-ins, sorted; nothing is imported."""
    return tuple(sorted({ep.name for ep in entry_points(group)}))


def describe(group: str, name: str) -> str:
    """``entry point <name> = '<module:attr>' (group <group>, package <dist>)`` for messages."""
    found = [ep for ep in entry_points(group) if ep.name == name]
    return " and ".join(f"entry point {name} = {ep.value!r} (group {group}{f', package {ep.dist.name}' if ep.dist else ''})" for ep in found)


def _base(group: str) -> type:
    if group == HASHERS:
        from cbir.hashing.base import BaseHasher

        return BaseHasher
    from cbir.deephash.base import HashLoss  # imports torch: only when a loss plug-in is loaded

    return HashLoss


def load(group: str, name: str) -> type:
    """The class registered as ``name`` in ``group``, imported now. A PluginError names the entry
    point when there is none or several, when importing it fails, or when it is not a subclass of
    the group's base class."""
    found = [ep for ep in entry_points(group) if ep.name == name]
    if not found:
        raise PluginError(f"no plug-in {name!r} in entry-point group {group}")
    if len(found) > 1:
        raise PluginError(f"two packages register plug-in {name!r}: {describe(group, name)}")
    try:
        loaded = found[0].load()
    except Exception as err:  # whatever the plug-in's import raises is the plug-in's problem: say whose
        raise PluginError(f"{describe(group, name)} failed to load: {type(err).__name__}: {err}") from err
    base = _base(group)
    if not (isinstance(loaded, type) and issubclass(loaded, base)):
        raise PluginError(f"{describe(group, name)} is {loaded!r}, not a subclass of {base.__module__}.{base.__qualname__}")
    return loaded


def method_class(group: str, name: str, built_in: dict[str, type], what: str) -> type:
    """The class of method ``name``: a built-in one (``built_in``), else ``group``'s plug-in of that
    name; a ValueError names the unknown ``what`` ("hashing method") with the built-in and installed ones."""
    if name in built_in:
        return built_in[name]
    if name in names(group):
        return load(group, name)
    installed = ", ".join(names(group)) or "none installed"
    raise ValueError(f"unknown {what} {name!r}; built in: {', '.join(sorted(built_in))}; plug-ins: {installed}")


def name_of(group: str, cls: type) -> str | None:
    """The name ``cls`` is registered under in ``group`` (importing the group's plug-ins), or None."""
    for name in names(group):
        try:
            if load(group, name) is cls:
                return name
        except PluginError:
            continue  # another plug-in's failure is not this class's
    return None


def options(group: str, cls: type) -> set[str] | None:
    """The options a config section may give a plug-in: a hasher's constructor parameters (but
    ``n_bits`` and ``random_state``, which the pipeline sets), a loss's ``defaults``; None when a
    hasher takes ``**kwargs`` (anything goes)."""
    if group == LOSSES:
        return set(cls.defaults)
    parameters = inspect.signature(cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"n_bits", "random_state"}


@functools.cache
def display_name(name: str) -> str | None:
    """The ``display_name`` class attribute of the plug-in ``name`` (hasher or loss), if it has one."""
    for group in (HASHERS, LOSSES):
        if name in names(group):
            try:
                return getattr(load(group, name), "display_name", None)
            except PluginError:
                return None  # a table still shows the plug-in, under its entry-point name
    return None
