"""``Backend``: the short way to write a backend plugin.

Subclass it, set ``spec``, write ``configure`` (and ``open``), and publish an
instance as the entry point.  It implements the hooks of
:mod:`cmf_core.hookspecs` and answers only for ``spec.type``::

    class Local(Backend):
        spec = BackendSpec("local", "a directory", options=(InitOption("path", "...", required=True),))

        def configure(self, options): return Remote("local", "local-storage", options["path"])
        def open(self, remote): return LocalStore(remote.url)

    plugin = Local()        # [project.entry-points."cmf.backends"] local = "pkg.module:plugin"
"""
from __future__ import annotations

from typing import Dict, Optional

from cmf_core.hookspecs import BackendSpec, ObjectStore, Remote, hookimpl


class Backend:
    """One repository type: its spec, how its options become a Remote, how a Remote opens."""

    spec: BackendSpec

    def configure(self, options: Dict[str, object]) -> Remote:
        """Validate the options (see :func:`cmf_core.hookspecs.cmf_backend_configure`)."""
        raise NotImplementedError

    def open(self, remote: Remote) -> ObjectStore:
        """Open the remote for transfers (see :func:`cmf_core.hookspecs.cmf_backend_open`)."""
        raise NotImplementedError

    @hookimpl
    def cmf_backend_spec(self, repo_type: str) -> Optional[BackendSpec]:
        return self.spec if repo_type == self.spec.type else None

    @hookimpl
    def cmf_backend_configure(self, repo_type: str, options: Dict[str, object]) -> Optional[Remote]:
        return self.configure(options) if repo_type == self.spec.type else None

    @hookimpl
    def cmf_backend_open(self, remote: Remote) -> Optional[ObjectStore]:
        return self.open(remote) if remote.type == self.spec.type else None
