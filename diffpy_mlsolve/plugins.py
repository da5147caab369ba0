"""Solvers and refiners found through entry points.

A solver or refiner is a class named by an entry point, nothing else: the
first-party ones are declared in setup.py exactly as a third party declares
its own, and no registry is written in the core.

- ``diffpy.structure_solvers``: name -> a solver class (a ``solve`` method).
- ``diffpy_mlsolve.refiners``: name -> a refiner class (a ``refine``
  method).

The groups are read once, on first use, into frozen :class:`PluginInfo`
records; :func:`refresh` reads them again.  Listing imports each plugin's
own module (which must stay light) to read its ``requires`` and
``install_hint`` class attributes, but never the backends themselves:
their presence is checked with :func:`importlib.util.find_spec`.

A plugin whose module fails to import becomes a warning naming it and is
marked broken, never a crash of discovery.  A name declared by two
distributions, a plugin of the wrong shape and a missing backend are errors
raised by :func:`get_solver` / :func:`get_refiner` that say how to fix them.

This module imports only the standard library.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import warnings
from dataclasses import dataclass

from diffpy_mlsolve.errors import (
    MissingBackendError,
    PluginError,
    PluginValidationError,
)

__all__ = [
    "SOLVER_GROUP",
    "REFINER_GROUP",
    "PluginInfo",
    "PluginLoadWarning",
    "available_plugins",
    "get_solver",
    "get_refiner",
    "refresh",
    "missing_modules",
]

#: Entry-point group of structure solvers (shared across diffpy).
SOLVER_GROUP = "diffpy.structure_solvers"
#: Entry-point group of refiners of candidate structures.
REFINER_GROUP = "diffpy_mlsolve.refiners"

_GROUPS = {"solver": SOLVER_GROUP, "refiner": REFINER_GROUP}
# the method each kind must have, and the leading positional arguments
# it must take
_METHODS = {
    "solver": ("solve", ("pattern",)),
    "refiner": ("refine", ("structure", "pattern")),
}
_GETTER = {"solver": "get_solver", "refiner": "get_refiner"}


class PluginLoadWarning(UserWarning):
    """A plugin whose module could not be imported; it is skipped."""


@dataclass(frozen=True)
class PluginInfo:
    """One declared plugin, as found in the installed metadata.

    Attributes
    ----------
    name : str
        The entry-point name, e.g. ``"crystalnet"``.
    kind : {"solver", "refiner"}
        Which group declared it.
    value : str
        The ``"module:attr"`` string the entry point points at.
    distribution : str
        The name of the installed distribution that declares it.
    version : str
        That distribution's version.
    backend_ok : bool
        Whether every module in the plugin's ``requires`` is installed
        (False for a broken plugin).
    backend_hint : str
        The plugin's ``install_hint`` when a backend is missing, else "".
    error : str
        Why the plugin cannot be used (import failure, wrong shape), or ""
        for a usable plugin.
    """

    name: str
    kind: str
    value: str
    distribution: str
    version: str
    backend_ok: bool
    backend_hint: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when the plugin loads, has the right shape and backends."""
        return not self.error and self.backend_ok

    @property
    def label(self) -> str:
        """``kind 'name' (distribution version)`` for messages."""
        return (
            f"{self.kind} {self.name!r} ({self.distribution} "
            f"{self.version}, {self.value})"
        )


@dataclass(frozen=True)
class _Record:
    info: PluginInfo
    obj: object = None
    exc: BaseException | None = None


_CACHE: dict[str, tuple[_Record, ...]] = {}


def refresh() -> None:
    """Forget what was discovered; the next call reads entry points again.

    Use it after installing a plugin in a running session (and in tests).
    """
    _CACHE.clear()
    importlib.invalidate_caches()


def normalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares it (Foo_Bar -> foo-bar)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_modules(requires) -> list[str]:
    """The module names in ``requires`` that are not installed.

    Uses :func:`importlib.util.find_spec`, so nothing is imported but the
    parent packages of dotted names (``diffpy`` for ``diffpy.srfit``).
    """
    missing = []
    for module in requires or ():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def _shape_problem(obj, kind: str) -> str:
    """Why ``obj`` is not a usable plugin of ``kind``, or ""."""
    method, args = _METHODS[kind]
    if not inspect.isclass(obj):
        return (
            f"it is a {type(obj).__name__}, not a class. The entry point "
            f"must name a class with a {method}() method"
        )
    func = getattr(obj, method, None)
    if not callable(func):
        return f"the class {obj.__name__} has no {method}() method"
    if inspect.isabstract(obj):
        names = ", ".join(sorted(obj.__abstractmethods__))
        return f"the class {obj.__name__} leaves abstract: {names}"
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature
        return ""
    try:
        # self, then the data arguments given positionally
        signature.bind_partial(None, *args)
    except TypeError:
        return (
            f"{obj.__name__}.{method}{signature} does not take "
            f"{method}({', '.join(args)}, ...)"
        )
    return ""


def _load(ep, kind: str) -> _Record:
    dist = getattr(ep, "dist", None)
    dist_name = dist.name if dist is not None else "<unknown>"
    version = dist.version if dist is not None else "?"
    base = dict(
        name=ep.name,
        kind=kind,
        value=ep.value,
        distribution=dist_name,
        version=version,
    )
    try:
        obj = ep.load()
    except Exception as err:  # a plugin may fail in any way on import
        reason = f"import failed: {type(err).__name__}: {err}"
        warnings.warn(
            f"diffpy-mlsolve skips the {kind} plugin {ep.name!r} from "
            f"{dist_name} {version} ({ep.value}): {reason}. Please "
            f"reinstall or fix {dist_name}.",
            PluginLoadWarning,
            stacklevel=4,
        )
        info = PluginInfo(**base, backend_ok=False, error=reason)
        return _Record(info, None, err)
    problem = _shape_problem(obj, kind)
    requires = getattr(obj, "requires", ()) or ()
    if isinstance(requires, str):
        requires = (requires,)
    missing = missing_modules(requires)
    hint = ""
    if missing:
        hint = str(getattr(obj, "install_hint", "") or "")
        hint = hint or f"Please install {', '.join(missing)}."
    info = PluginInfo(
        **base, backend_ok=not missing, backend_hint=hint, error=problem
    )
    return _Record(info, obj, None)


def _discover(kind: str) -> tuple[_Record, ...]:
    if kind not in _GROUPS:
        raise PluginError(
            f"Unknown plugin kind {kind!r}. Please use one of "
            f"{sorted(_GROUPS)}."
        )
    if kind not in _CACHE:
        found, seen = [], set()
        eps = importlib.metadata.entry_points(group=_GROUPS[kind])
        for ep in eps:
            dist = getattr(ep, "dist", None)
            key = (ep.name, ep.value, dist.name if dist else None)
            if key in seen:  # one distribution seen twice on sys.path
                continue
            seen.add(key)
            found.append(_load(ep, kind))
        found.sort(key=lambda r: (r.info.name, r.info.distribution))
        _CACHE[kind] = tuple(found)
    return _CACHE[kind]


def available_plugins(kind: str | None = None) -> list[PluginInfo]:
    """Every declared solver and refiner, sorted by kind and name.

    Parameters
    ----------
    kind : {"solver", "refiner"} or None
        Only this kind; None lists both.

    Returns
    -------
    list of PluginInfo
        Broken plugins are listed too, with ``error`` set (a warning was
        given when they failed to import).  A name declared by two
        distributions appears twice.
    """
    kinds = sorted(_GROUPS) if kind is None else [kind]
    out = []
    for k in kinds:
        out.extend(r.info for r in _discover(k))
    return sorted(out, key=lambda i: (i.kind, i.name, i.distribution))


def _choose(kind: str, name: str, distribution: str | None) -> _Record:
    records = _discover(kind)
    matches = [r for r in records if r.info.name == name]
    if not matches:
        known = sorted({r.info.name for r in records})
        msg = (
            f"No {kind} named {name!r}. Known {kind}s: "
            f"{', '.join(known) if known else 'none'}."
        )
        other = "refiner" if kind == "solver" else "solver"
        if any(r.info.name == name for r in _discover(other)):
            msg += f" {name!r} is a {other}: please use {_GETTER[other]}()."
        else:
            msg += (
                f" A {kind} is installed by declaring an entry point in "
                f"the group {_GROUPS[kind]!r}."
            )
        raise PluginError(msg)
    if distribution is not None:
        wanted = normalize_name(distribution)
        chosen = [
            r for r in matches if normalize_name(r.info.distribution) == wanted
        ]
        if not chosen:
            dists = ", ".join(r.info.distribution for r in matches)
            raise PluginError(
                f"No {kind} {name!r} from the distribution "
                f"{distribution!r}; it is declared by: {dists}."
            )
        matches = chosen
    loaded = [r for r in matches if r.exc is None]
    if loaded:  # a plugin that failed to import was skipped with a warning
        matches = loaded
    if len(matches) > 1:
        dists = [f"{r.info.distribution} {r.info.version}" for r in matches]
        raise PluginValidationError(
            f"The {kind} {name!r} is declared by more than one "
            f"distribution: {' and '.join(dists)} "
            f"({', '.join(r.info.value for r in matches)}). Please "
            f"uninstall one, or pick one explicitly with "
            f"{_GETTER[kind]}({name!r}, "
            f"distribution={matches[0].info.distribution!r})."
        )
    return matches[0]


def _get(kind: str, name: str, distribution: str | None, settings: dict):
    record = _choose(kind, name, distribution)
    info = record.info
    if record.exc is not None:
        raise PluginError(
            f"The {info.label} could not be imported: "
            f"{type(record.exc).__name__}: {record.exc}. Please reinstall "
            f"or fix {info.distribution}."
        ) from record.exc
    if info.error:
        raise PluginValidationError(
            f"The {info.label} is not a valid {kind}: {info.error}. "
            f"Please report this to the authors of {info.distribution}."
        )
    if not info.backend_ok:
        missing = missing_modules(getattr(record.obj, "requires", ()))
        raise MissingBackendError(
            f"The {kind} {name!r} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed. "
            f"{info.backend_hint}"
        )
    return record.obj(**settings)


def get_solver(name: str, *, distribution: str | None = None, **settings):
    """An instance of the structure solver declared as ``name``.

    Parameters
    ----------
    name : str
        The entry-point name in ``diffpy.structure_solvers``, e.g.
        ``"crystalnet"``.
    distribution : str or None
        The distribution to take ``name`` from when several declare it
        (compared as PEP 503 names, so ``thirdparty-pkg`` matches
        ``thirdparty_pkg``).
    **settings
        Passed to the solver's constructor (e.g. ``device="cpu"``).

    Raises
    ------
    PluginError
        For an unknown name (the message lists the known ones) or a
        plugin whose module does not import.
    PluginValidationError
        For a name declared by two distributions without ``distribution``,
        or an entry point that is not a class with a ``solve`` method.
    MissingBackendError
        When a module in the solver's ``requires`` is not installed; the
        message carries its ``install_hint``.
    """
    return _get("solver", name, distribution, settings)


def get_refiner(name: str, *, distribution: str | None = None, **settings):
    """An instance of the refiner declared as ``name``.

    Parameters
    ----------
    name : str
        The entry-point name in ``diffpy_mlsolve.refiners``, e.g.
        ``"rietveld"`` or ``"pdf"``.
    distribution : str or None
        The distribution to take ``name`` from when several declare it.
    **settings
        Passed to the refiner's constructor.

    Raises
    ------
    PluginError, PluginValidationError, MissingBackendError
        As for :func:`get_solver`; a refiner needs a ``refine`` method.
    """
    return _get("refiner", name, distribution, settings)
