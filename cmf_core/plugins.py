"""Discovery and selection of backend plugins.

Backends are entry points in the group ``cmf.backends``, named by repository
type.  Built-in backends are ordinary entry points of this distribution; a
third-party distribution that declares one is picked up the same way.

* :func:`load_backend` loads exactly one entry point: push and pull use it, so
  a broken or half-installed unrelated backend never matters to them.
* :func:`load_all` loads every entry point for ``cmf backends`` and ``cmf
  init``; a plugin that fails to import is reported (and warned about), not
  raised, unless strict mode is on (``strict=True`` or ``CMF_STRICT_PLUGINS=1``,
  meant for CI).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import pluggy

from cmf_core import hookspecs
from cmf_core.errors import ConfigError, PluginError

if TYPE_CHECKING:  # importlib.metadata is imported where entry points are scanned: ``cmf --help`` need not pay for it
    from importlib.metadata import EntryPoint

GROUP = "cmf.backends"


@dataclass
class BackendInfo:
    """What ``cmf backends`` reports about one installed backend."""

    type: str
    distribution: str
    version: str
    module: str
    spec: Optional[hookspecs.BackendSpec] = None
    error: Optional[str] = None
    missing: List[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.error:
            return f"broken: {self.error}"
        if self.missing:
            hint = f" ({self.spec.install_hint})" if self.spec and self.spec.install_hint else ""
            return f"missing dependency: {', '.join(self.missing)}{hint}"
        return "ok"


def _strict(strict: Optional[bool]) -> bool:
    return strict if strict is not None else os.environ.get("CMF_STRICT_PLUGINS", "") not in ("", "0")


def new_manager() -> pluggy.PluginManager:
    """A plugin manager that knows the hookspecs and no plugin yet."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def entry_point_map() -> Dict[str, EntryPoint]:
    """Installed backend entry points by repository type, without importing any of them."""
    return dict(_scan(tuple(sys.path)))


@functools.lru_cache(maxsize=8)
def _scan(path: Tuple[str, ...]) -> Tuple[Tuple[str, EntryPoint], ...]:
    """Scanning every distribution costs ~10 ms: done once per ``sys.path``."""
    from importlib.metadata import entry_points

    found: Dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)  # the first on sys.path wins, as for imports
    return tuple(sorted(found.items(), key=lambda kv: kv[0].lower()))


def available_types() -> List[str]:
    """Repository types that ``cmf init`` accepts."""
    return list(entry_point_map())


def _describe(ep: EntryPoint) -> Tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"], dist.version


def _register(pm: pluggy.PluginManager, ep: EntryPoint) -> hookspecs.BackendSpec:
    """Import ``ep``, register it and return its spec; raise PluginError on any failure."""
    try:
        plugin = ep.load()
    except Exception as exc:  # a third-party import can fail in any way
        raise PluginError(f"backend {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}") from exc
    try:
        pm.register(plugin, name=ep.name)
        pm.check_pending()
    except Exception as exc:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        raise PluginError(f"backend {ep.name!r} ({ep.value}) is not a valid plugin: {exc}") from exc
    spec = pm.hook.cmf_backend_spec(repo_type=ep.name)
    if spec is None:
        pm.unregister(plugin)
        raise PluginError(f"backend {ep.name!r} ({ep.value}) does not describe repository type {ep.name!r}")
    return spec


def _missing(spec: hookspecs.BackendSpec) -> List[str]:
    return [mod for mod in spec.requires if importlib.util.find_spec(mod) is None]


def load_backend(repo_type: str) -> Tuple[pluggy.PluginManager, hookspecs.BackendSpec]:
    """Load the one backend of ``repo_type`` and nothing else."""
    eps = entry_point_map()
    if repo_type not in eps:
        raise ConfigError(
            f"unknown repository type {repo_type!r}; available: {', '.join(eps) or 'none installed'}"
        )
    pm = new_manager()
    return pm, _register(pm, eps[repo_type])


def load_all(strict: Optional[bool] = None) -> Tuple[pluggy.PluginManager, List[BackendInfo]]:
    """Load every installed backend; report, warn about, and skip the broken ones."""
    pm = new_manager()
    infos = []
    for name, ep in entry_point_map().items():
        dist, version = _describe(ep)
        info = BackendInfo(type=name, distribution=dist, version=version, module=ep.value)
        try:
            info.spec = _register(pm, ep)
            info.missing = _missing(info.spec)
        except PluginError as exc:
            if _strict(strict):
                raise
            info.error = str(exc)
            warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
        infos.append(info)
    return pm, infos


def open_store(remote: hookspecs.Remote,
               loaded: Optional[Tuple[pluggy.PluginManager, hookspecs.BackendSpec]] = None) -> hookspecs.ObjectStore:
    """Load the backend of ``remote.type`` only (or use ``loaded``), check its dependencies, open the remote."""
    pm, spec = loaded or load_backend(remote.type)
    missing = _missing(spec)
    if missing:
        hint = f"; {spec.install_hint}" if spec.install_hint else ""
        raise PluginError(f"backend {remote.type!r} needs {', '.join(missing)}, which is not installed{hint}")
    try:
        store = pm.hook.cmf_backend_open(remote=remote)
    except NotImplementedError:
        store = None
    if store is None:
        raise PluginError(f"backend {remote.type!r} does not implement transfers (cmf_backend_open)")
    return store
