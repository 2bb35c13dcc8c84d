"""The contract between the cmf core and a storage backend.

A backend is a module (or any object) that implements some of the hooks below
with ``@hookimpl`` and is published as an entry point in the group
``cmf.backends`` whose *name is its repository type* (the word after
``cmf init``)::

    [project.entry-points."cmf.backends"]
    local = "cmf_backends.local"

A backend does three things and nothing else:

1. declares the options of ``cmf init <type>``  (:func:`cmf_backend_spec`);
2. turns those options into a stored :class:`Remote`  (:func:`cmf_backend_configure`);
3. opens that remote as an :class:`ObjectStore` that moves ONE object at a time
   (:func:`cmf_backend_open`), and, where its server allows, many small ones in one
   request (:attr:`ObjectStore.batch`).

The core owns everything else, written once for every backend: which objects
to move, parallelism, skip-existing, md5 verification, temp-file-then-rename
placement, retries with backoff, progress, dry-run, the summary and the exit
status.

All hooks are ``firstresult``: pluggy calls implementations until one returns
something other than ``None``.  Every hook receives the repository type, and an
implementation returns ``None`` for a type that is not its own, so one
distribution may serve several types and several backends may be loaded side
by side (``cmf backends``, ``cmf init``).  ``cmf artifact push``/``pull`` load
only the entry point that the workspace's stored config names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import pluggy

PROJECT = "cmf"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class InitOption:
    """One option of ``cmf init <type>``.

    ``name`` is the Python parameter name (``endpoint_url``); the command line
    spells it with dashes (``--endpoint-url``).  A ``secret`` option is never
    written to a git-tracked file and is masked wherever config is printed.
    ``envvar`` lets the value come from the environment instead of the command
    line (where it would show in ``ps`` and shell history).
    """

    name: str
    help: str
    required: bool = False
    secret: bool = False
    is_flag: bool = False
    type: type = str
    default: object = None
    envvar: Optional[str] = None
    metavar: Optional[str] = None

    @property
    def flag(self) -> str:
        """The command-line spelling, e.g. ``--endpoint-url``."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class BackendSpec:
    """What a backend declares about itself.

    ``requires`` names the modules it imports to move objects (``("minio",)``);
    ``cmf backends`` reports whether they are importable, and ``install_hint``
    tells the user how to get them (``pip install 'cmf-ml[s3]'``).  ``jobs`` is
    how many transfers run at once unless the user says ``-j``.
    """

    type: str
    description: str
    options: Tuple[InitOption, ...] = ()
    requires: Tuple[str, ...] = ()
    install_hint: str = ""
    jobs: int = 4


@dataclass
class Remote:
    """An artifact repository as ``cmf init`` stores it and push/pull open it.

    It is stored as a DVC remote, so that plain ``dvc push``/``dvc pull`` use the
    same repository:

    * ``name``, ``url`` and ``options`` go to ``.dvc/config`` (git-tracked);
    * ``secrets`` (keys, tokens, passwords, as DVC option names) go to
      ``.dvc/config.local`` (git-ignored, mode 0600);
    * ``settings`` that DVC has no option for go to the ``[<name>]`` section of
      ``.cmfconfig``.

    A backend whose store DVC cannot address sets ``dvc=False``: then nothing is
    written to DVC's config and everything lives in ``.cmfconfig`` and its
    git-ignored companion ``.cmfconfig.local``.  ``notes`` are messages for the
    user that ``cmf init`` prints (e.g. which host key was trusted); they are
    not stored.
    """

    type: str
    name: str
    url: str
    options: Dict[str, str] = field(default_factory=dict)
    secrets: Dict[str, str] = field(default_factory=dict)
    settings: Dict[str, str] = field(default_factory=dict)
    dvc: bool = True
    notes: List[str] = field(default_factory=list)


class ObjectStore:
    """An open artifact repository that moves single objects.

    Keys are relative, ``/``-separated paths such as
    ``files/md5/d4/1d8cd98f00b204e9800998ecf8427e``; the store maps them under
    its root (bucket prefix, remote directory, origin path).

    Every method may be called from several threads at once and must be
    thread-safe.  Raise :class:`cmf_core.errors.ObjectNotFound` for a missing
    key, :class:`cmf_core.errors.TransientError` for a failure worth retrying
    (connection reset, timeout, HTTP 5xx, throttling) and
    :class:`cmf_core.errors.BackendError` for everything that retrying cannot
    fix (wrong credentials, missing bucket, permission denied); the message must
    name the key, bucket or host concerned.
    """

    def exists(self, keys: Sequence[str]) -> Set[str]:
        """Return the subset of ``keys`` that the repository holds.

        Called once with every key of a push, so a store that can list a
        prefix should list instead of asking per key.
        """
        raise NotImplementedError

    def put(self, src: Path, key: str) -> None:
        """Upload the local file ``src`` to ``key``, replacing what is there.

        Where the store allows it, a reader must never see a partial object at
        ``key`` (upload to a temporary name, then rename).  ``src`` holds the
        bytes whose md5 ``key`` names (:func:`cmf_core.layout.content_md5`); a
        store may have its server check that and refuse a file that does not
        match (the S3 backends send Content-MD5), so a corrupt local copy never
        reaches the remote.
        """
        raise NotImplementedError

    def get(self, key: str, dst: BinaryIO) -> None:
        """Write the bytes of ``key``, in order, to the writable stream ``dst``.

        ``dst`` is not seekable: the core hashes the bytes as they arrive and
        places the file only when the md5 matches.  Stream; never hold the
        whole object in memory.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and sessions. Called once, after the last transfer."""

    # -- optional: batches, where one request can carry many objects -----------------------------------

    #: How many objects one :meth:`get_many` / :meth:`put_many` call may carry; 0 (the default): the store moves
    #: one object per request and the engine never calls them.
    batch: int = 0

    def get_many(self, keys: Sequence[str]) -> Iterator[Tuple[str, Iterator[bytes]]]:
        """Stream several objects in one request: yield ``(key, its bytes in chunks)``, in any order, each
        object's chunks read to the end before the next is asked for.  A key not held, or one the stream broke
        off before, is left out: the engine then asks :meth:`get` for it, which says what is wrong.  The engine
        checks every object's md5, as for :meth:`get`.  A store that finds it cannot batch here (a server that
        refuses the request) moves the objects some other way itself, and may say so in :meth:`report`."""
        raise NotImplementedError

    def put_many(self, items: Sequence[Tuple[bytes, str]]) -> None:
        """Store several small objects, ``(their bytes, key)``, the bytes already checked against the keys, in
        one request.  Each takes its key whole (never a partial object at a key); on any failure raise, and the
        engine puts the batch's objects one by one with :meth:`put`."""
        raise NotImplementedError

    def report(self) -> Dict[str, object]:
        """What a ``--json`` result says of how the objects travelled, e.g. ``{"route": "exec (tar)",
        "round_trips": 12}`` (round trips the client waited for, in this process); ``{}`` by default.  A ``note``
        in it is said once, among the result's notes."""
        return {}


@hookspec(firstresult=True)
def cmf_backend_spec(repo_type: str) -> Optional[BackendSpec]:
    """Describe the backend for ``repo_type``, or return ``None`` if it is not yours.

    Must be cheap and must not import the backend's SDK: ``cmf backends`` and
    ``cmf init --help`` call it for every installed backend.
    """


@hookspec(firstresult=True)
def cmf_backend_configure(repo_type: str, options: Dict[str, object]) -> Optional[Remote]:
    """Validate the ``cmf init`` options of ``repo_type`` and return the :class:`Remote` to store.

    ``options`` maps each :class:`InitOption` name to its value (``None`` when
    not given).  Reject malformed input (a URL with the wrong scheme, an
    unreadable key file, a missing required value) by raising
    :class:`cmf_core.errors.ConfigError` with a one-line message; nothing has
    been written yet when this hook runs.  Must not contact the network.
    Return ``None`` if ``repo_type`` is not yours.
    """


@hookspec(firstresult=True)
def cmf_backend_open(remote: Remote) -> Optional[ObjectStore]:
    """Open ``remote`` (whose ``type`` is yours) for transfers, or return ``None``.

    Import the SDK here, not at module import time.  Clients and sessions
    created here are shared by all transfer threads.
    """
