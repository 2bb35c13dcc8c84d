"""The sshremote object store: SFTP sessions (paramiko) in a small pool shared by the transfer threads.

* **Host keys** are checked against a ``known_hosts`` file (:mod:`.hostkeys`):
  an unknown host is refused with its key type and SHA256 fingerprint and the
  two ways to trust it; a changed key is always refused.
* **Pool**: at most ``sessions`` SSH connections (each one Transport with one
  SFTP channel), opened lazily when a thread finds no idle one.  sshd drops
  unauthenticated connections beyond ``MaxStartups`` (10 by default), so the
  cap stays below it.  A connection that fails is discarded, never reused.
* **Speed**: uploads are pipelined (no wait for each write's ack) and downloads
  of more than one request prefetched; requests are as large as the server's
  ``limits@openssh.com`` allow (up to :data:`MAX_REQUEST`), instead of
  paramiko's 32 KiB.
* **Atomic, verified puts**: ``.<name>.<uuid>.tmp`` beside the target, renamed over it only
  when the bytes sent have the md5 the key names.  An upload that was killed leaves its temp
  file behind; the next push that lists the folder removes it once it is :data:`ABANDONED`.
* **Batches** (:attr:`batch` objects a request): where the account may run commands, a pull
  streams many objects through one ``tar -cf -`` on an exec channel, a push sends many in one
  ``tar -xf -`` into a temp folder, then renames each into place (one ``mv`` per folder), and a
  push's listing is one ``find``: a few round trips a batch instead of four or more an object.
  An SFTP-only account (``ForceCommand internal-sftp``) runs no command: a probe finds that once,
  the result's notes say so, and a batch goes over SFTP with its requests pipelined (each step of
  all its objects at once: opens, reads, closes, renames).  :meth:`report` counts the round trips
  waited for.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import posixpath
import queue
import re
import shlex
import socket
import stat
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import paramiko
from paramiko.sftp import (CMD_CLOSE, CMD_DATA, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_HANDLE, CMD_MKDIR, CMD_NAME,
                           CMD_OPEN, CMD_OPENDIR, CMD_READ, CMD_READDIR, CMD_REMOVE, CMD_STATUS, CMD_WRITE, SFTP_EOF,
                           SFTP_FLAG_CREATE, SFTP_FLAG_READ, SFTP_FLAG_TRUNC, SFTP_FLAG_WRITE, SFTP_OK,
                           SFTP_PERMISSION_DENIED, int64)
from paramiko.sftp_attr import SFTPAttributes

from cmf_core import layout
from cmf_core.errors import BackendError, CmfError, CorruptSource, ObjectNotFound, TransientError
from cmf_core.hookspecs import ObjectStore

from .hostkeys import RefusePolicy, UnknownHostKey, changed_host_key_message, known_hosts_name, unknown_host_message

SESSIONS = 8              # SSH connections per store at most (sshd's MaxStartups starts dropping at 10)
TIMEOUT = 30.0            # seconds for TCP connect, SSH banner and authentication
IO_TIMEOUT = 120.0        # seconds without an answer from the SFTP server before a transfer fails
DEFAULT_REQUEST = 32768   # SFTP read/write size every server must accept
MAX_REQUEST = 255 << 10   # largest read/write request used when the server's limits allow it
ABANDONED = 3600.0        # seconds since its last write after which a temp file is a killed upload's
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")  # what put() uploads to: .<name>.<uuid4 hex>.tmp
BATCH = 256               # objects one tar stream (or one window of pipelined SFTP requests) carries
PIPELINED_READ = 1 << 20  # an object that proves larger is left to get() (prefetched) by a pipelined read
BATCH_ENV = "CMF_SSH_BATCH"  # 0: no batches, every object over SFTP (for comparison, or a host whose shell misbehaves)
BATCH_PREFIX = ".cmf-batch-"  # the folder a batch upload unpacks into, in the root, before its renames
BATCH_DIR_VAR = '"$t"'    # the shell variable that names it
PROBE = "printf cmf-exec; command -v tar >/dev/null 2>&1 && printf ' tar'"  # answers "cmf-exec tar" in a shell


class _Counted(paramiko.SFTPClient):
    """An SFTP session that counts the requests it waits for (open, stat, a read, close...), for
    :meth:`SFTPStore.report`; pipelined writes and prefetched reads are not waited for one by one."""

    count = staticmethod(lambda n: None)

    def _request(self, t, *args):  # paramiko's one door for requests that wait for their answer
        self.count(1)
        return super()._request(t, *args)


class _Pipeline:
    """Requests sent together on one SFTP channel and their answers read as they come: a step (open, read,
    close...) of many objects costs one round trip.  paramiko hands the answer to a request to the
    ``_async_response`` of the object that sent it; its own prefetch works so (it has no public API for this)."""

    def __init__(self, sftp: paramiko.SFTPClient, count) -> None:
        self.sftp, self.count = sftp, count
        self.answers: Dict[int, Tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.answers[num] = (t, msg)

    def send(self, requests: Dict) -> Dict:
        """Send every request (``name: (command, *arguments)``), then wait for all of them: ``name: (answer's
        type, message)``."""
        numbers = {self.sftp._async_request(self, t, *args): name for name, (t, *args) in requests.items()}
        if numbers:
            self.count(1)
        while any(n not in self.answers for n in numbers):
            self.sftp._read_response()
        return {name: self.answers.pop(n) for n, name in numbers.items()}


class _Listings(dict):
    """Folder listings: a folder that was not there is FileNotFoundError, as ``listdir`` says."""

    def __missing__(self, folder: str) -> List[str]:
        raise FileNotFoundError(folder)


def _checked(answers: Dict) -> None:
    """OSError for the first answer that is a failure status."""
    for t, msg in answers.values():
        if t == CMD_STATUS:
            code, text = msg.get_int(), msg.get_text()
            if code != SFTP_OK:
                raise OSError(errno.EACCES if code == SFTP_PERMISSION_DENIED else errno.EIO, text)


class SFTPStore(ObjectStore):
    """Objects at ``<root>/<key>`` on an SSH host. Thread-safe; see the module docstring."""

    batch = BATCH

    def __init__(self, host: str, port: int, user: str, root: str, known_hosts: Path, *,
                 password: Optional[str] = None, key_file: Optional[str] = None,
                 passphrase: Optional[str] = None, sessions: int = SESSIONS) -> None:
        self.host, self.port, self.user, self.root = host, port, user, root.rstrip("/") or "/"
        self.known_hosts = known_hosts
        self.password, self.key_file, self.passphrase = password, key_file, passphrase
        self.where = f"{user}@{host}:{port}"
        self._idle: "queue.LifoQueue[Tuple[paramiko.SSHClient, paramiko.SFTPClient]]" = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(sessions)
        self._dirs: Set[str] = set()          # remote directories known to exist
        self._lock = threading.Lock()
        self._fatal: Optional[BackendError] = None  # auth or host key refused: do not try again
        self._request = DEFAULT_REQUEST
        self._exec: Optional[str] = None  # "" once commands are known to run, else why they do not
        if os.environ.get(BATCH_ENV, "1") == "0":  # the one-by-one SFTP path, asked for
            self.batch, self._exec = 0, f"{BATCH_ENV}=0"
        self._probing = threading.Lock()
        self._round_trips = 0

    # -- connections -------------------------------------------------------------------------------

    def _connect(self) -> Tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        if self._fatal is not None:
            raise self._fatal
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(RefusePolicy())
        authless = not self.password and not self.key_file
        try:
            client.connect(self.host, self.port, username=self.user, password=self.password or None,
                           key_filename=self.key_file or None, passphrase=self.passphrase or None,
                           allow_agent=not self.password, look_for_keys=authless, timeout=TIMEOUT,
                           banner_timeout=TIMEOUT, auth_timeout=TIMEOUT)
            sftp = _Counted.from_transport(client.get_transport())
            sftp.count = self._count
            sftp.get_channel().settimeout(IO_TIMEOUT)
        except BaseException as exc:
            transport = client.get_transport()
            logging_in = transport is not None and transport.is_active() and not transport.is_authenticated()
            client.close()
            error = self._connect_error(exc, logging_in)
            if error is None:
                raise
            if not isinstance(error, TransientError):
                self._fatal = error
            raise error from None
        self._request = self._limits(sftp)
        return client, sftp

    def _connect_error(self, exc: BaseException, logging_in: bool) -> Optional[BackendError]:
        """The cmf error for a failed connection; ``logging_in``: the handshake was done, the login was not."""
        name = known_hosts_name(self.host, self.port)
        how = "password" if self.password else f"key {self.key_file}" if self.key_file else "ssh-agent/default keys"
        if isinstance(exc, UnknownHostKey):
            return BackendError(unknown_host_message(name, self.host, self.port, exc.key, self.known_hosts))
        if isinstance(exc, paramiko.BadHostKeyException):
            return BackendError(changed_host_key_message(name, exc.key, exc.expected_key, self.known_hosts))
        if isinstance(exc, paramiko.SSHException) and "No authentication methods" in str(exc):
            return BackendError(f"no credentials for {self.where}: give --password or --key-file, or run an ssh-agent")
        if isinstance(exc, paramiko.AuthenticationException) or (logging_in and isinstance(exc, paramiko.SSHException)):
            return BackendError(f"authentication as {self.where} failed ({how}): {exc}")
        if isinstance(exc, socket.gaierror):
            return BackendError(f"cannot resolve host {self.host!r} of {self.where}: {exc}")
        if isinstance(exc, (OSError, EOFError, paramiko.SSHException)):
            return TransientError(f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}")
        return None

    @staticmethod
    def _limits(sftp: paramiko.SFTPClient) -> int:
        """The request size to use: the server's ``limits@openssh.com`` (capped), else 32 KiB."""
        try:
            kind, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")  # no public API for extensions
            if kind != CMD_EXTENDED_REPLY:
                return DEFAULT_REQUEST
            _, most_read, most_write = msg.get_int64(), msg.get_int64(), msg.get_int64()  # max packet, read, write
        except Exception:  # an optimisation only: any trouble means the size every server takes
            return DEFAULT_REQUEST
        return max(DEFAULT_REQUEST, min(most_read or MAX_REQUEST, most_write or MAX_REQUEST, MAX_REQUEST))

    @contextlib.contextmanager
    def _session(self) -> Iterator[paramiko.SFTPClient]:
        """Borrow an SFTP session (see :meth:`_connection`)."""
        with self._connection() as (_, sftp):
            yield sftp

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Tuple[paramiko.SSHClient, paramiko.SFTPClient]]:
        """Borrow a connection and its SFTP session; cmf errors keep it, a broken connection or anything else
        drops it."""
        self._slots.acquire()
        try:
            client, sftp = self._take()
        except BaseException:
            self._slots.release()
            raise
        keep = False
        try:
            yield client, sftp
            keep = True
        except BackendError as exc:
            keep = not isinstance(exc, TransientError)
            raise
        finally:
            if keep and client.get_transport() is not None and client.get_transport().is_active():
                self._idle.put((client, sftp))
            else:
                client.close()
            self._slots.release()

    def _take(self) -> Tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        while True:
            try:
                client, sftp = self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
            transport = client.get_transport()
            if transport is not None and transport.is_active():
                return client, sftp
            client.close()

    @contextlib.contextmanager
    def _errors(self, path: str, key: Optional[str] = None) -> Iterator[None]:
        """Turn SFTP and connection failures into cmf errors that name the host and path."""
        try:
            yield
        except CmfError:
            raise
        except (EOFError, paramiko.SSHException, paramiko.SFTPError, ConnectionError, TimeoutError) as exc:
            raise TransientError(f"connection to {self.host}:{self.port} lost at {path}: "
                                 f"{exc or type(exc).__name__}") from None
        except OSError as exc:
            if key is not None and exc.errno == errno.ENOENT:
                raise ObjectNotFound(key, f"{self.where}:{self.root}") from None
            if exc.errno == errno.EACCES:
                raise BackendError(f"permission denied on {self.where}:{path}") from None
            if exc.errno is None and "closed" in str(exc).lower():  # paramiko's "Socket is closed"
                raise TransientError(f"connection to {self.host}:{self.port} lost at {path}: {exc}") from None
            raise BackendError(f"{self.where}:{path}: {exc.strerror or exc}") from None

    def _count(self, n: int) -> None:
        with self._lock:
            self._round_trips += n

    def report(self) -> Dict[str, object]:
        """How objects travelled: ``route`` (``exec (tar)``, or ``sftp`` and why), ``round_trips`` waited for,
        and a ``note`` when commands could not run here."""
        if not self._exec:
            return {"route": "sftp" if self._exec is None else "exec (tar)", "round_trips": self._round_trips}
        if not self.batch:  # switched off by the user, who knows: each object on its own, as before batches
            return {"route": f"sftp ({self._exec})", "round_trips": self._round_trips}
        return {"route": f"sftp ({self._exec})", "round_trips": self._round_trips,
                "note": f"{self.where}: {self._exec}; objects travel over SFTP, their requests pipelined"}

    # -- commands on an exec channel (batches) ------------------------------------------------------

    def _command(self, client: paramiko.SSHClient, command: str) -> paramiko.Channel:
        """``command`` started on a new channel of ``client``'s connection (two round trips: the channel, the
        exec request), its output not read yet."""
        channel = client.get_transport().open_session(timeout=TIMEOUT)
        channel.settimeout(IO_TIMEOUT)
        channel.exec_command(command)
        self._count(2)
        return channel

    def _commands(self, client: paramiko.SSHClient) -> bool:
        """Whether this account may run commands (a shell with tar), probed once per store.  An SFTP-only login
        (``ForceCommand internal-sftp``) runs the SFTP server for any command, which reads no command and
        answers nothing."""
        with self._probing:
            if self._exec is None:
                try:
                    channel = self._command(client, PROBE)
                    channel.shutdown_write()  # an SFTP server in the shell's place reads the end and stops
                    answer = channel.makefile("rb").read(64)
                    self._count(1)
                    channel.close()
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    answer = f"{exc or type(exc).__name__}".encode()
                if answer == b"cmf-exec tar":
                    self._exec = ""
                elif answer.startswith(b"cmf-exec"):
                    self._exec = "the host has no tar"
                else:
                    self._exec = "the server runs no commands for this account: an SFTP-only login"
            return not self._exec

    def _pipelined_get(self, sftp: paramiko.SFTPClient, keys: Sequence[str]) -> Iterator[Tuple[str, Iterator[bytes]]]:
        """The objects of ``keys`` over SFTP, each step for all of them at once: open them all, read a request's
        worth of each until its end, close them all: a few round trips for the batch.  Objects over
        :data:`PIPELINED_READ` bytes, and those that cannot be opened or read, are left out: :meth:`get` moves
        them (with prefetch) or names what is wrong."""
        pipe = _Pipeline(sftp, self._count)
        opened = pipe.send({k: (CMD_OPEN, self._path(k), SFTP_FLAG_READ, SFTPAttributes()) for k in keys})
        handles = {k: msg.get_binary() for k, (t, msg) in opened.items() if t == CMD_HANDLE}
        chunks: Dict[str, List[bytes]] = {k: [] for k in handles}
        sizes = dict.fromkeys(handles, 0)
        try:
            reading = set(handles)
            while reading:
                for k, (t, msg) in pipe.send({k: (CMD_READ, handles[k], int64(sizes[k]), self._request)
                                               for k in reading}).items():
                    if t == CMD_DATA:
                        chunks[k].append(msg.get_string())
                        sizes[k] += len(chunks[k][-1])
                        if sizes[k] <= PIPELINED_READ:
                            continue
                    elif t == CMD_STATUS and msg.get_int() == SFTP_EOF:
                        reading.discard(k)
                        continue
                    reading.discard(k)  # too large, or an error: left to get()
                    del chunks[k]
        finally:
            pipe.send({k: (CMD_CLOSE, handle) for k, handle in handles.items()})
        for k, parts in chunks.items():
            yield k, iter(parts)

    def _pipelined_put(self, sftp: paramiko.SFTPClient, items: Sequence[Tuple[bytes, str]]) -> None:
        """The objects over SFTP, each step for all of them at once: make the folders, open a temp file beside
        each target, write them all, close them all, rename them all into place; the temp files go on failure."""
        pipe = _Pipeline(sftp, self._count)
        targets = {key: self._path(key) for _, key in items}
        folders = sorted({posixpath.dirname(t) for t in targets.values()} - self._dirs)
        if folders:
            self._ensure_dir(sftp, posixpath.dirname(folders[0]))  # files/md5: the folders' common parent
            pipe.send({f: (CMD_MKDIR, f, SFTPAttributes()) for f in folders})  # one there already says so: fine
        temps = {key: f"{posixpath.dirname(t)}/.{posixpath.basename(t)}.{uuid.uuid4().hex}.tmp"
                 for key, t in targets.items()}
        opened = pipe.send({k: (CMD_OPEN, tmp, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC,
                                SFTPAttributes()) for k, tmp in temps.items()})
        handles = {k: msg.get_binary() for k, (t, msg) in opened.items() if t == CMD_HANDLE}
        try:
            refused = [k for k in temps if k not in handles]
            if refused:
                raise OSError(errno.EACCES, f"cannot create {temps[refused[0]]}")
            size = self._request
            _checked(pipe.send({(k, at): (CMD_WRITE, handles[k], int64(at), data[at:at + size])
                                for data, k in items for at in range(0, len(data), size)}))
            closing, handles = handles, {}
            _checked(pipe.send({k: (CMD_CLOSE, handle) for k, handle in closing.items()}))
            _checked(pipe.send({k: (CMD_EXTENDED, "posix-rename@openssh.com", temps[k], targets[k])
                                for k in temps}))
        except BaseException:
            with contextlib.suppress(Exception):
                pipe.send({k: (CMD_CLOSE, handle) for k, handle in handles.items()})
                pipe.send({k: (CMD_REMOVE, tmp) for k, tmp in temps.items()})
            raise
        with self._lock:
            self._dirs.update(folders)

    def _quoted(self, keys: Sequence[str]) -> str:
        return " ".join(shlex.quote(key) for key in keys)

    def get_many(self, keys: Sequence[str]) -> Iterator[Tuple[str, Iterator[bytes]]]:
        """The objects of ``keys`` through one ``tar -cf -`` of them, read as one stream (a missing key is left
        out: tar says so on its stderr and goes on); where no command runs, through pipelined SFTP requests
        (:meth:`_pipelined_get`)."""
        with self._connection() as (client, sftp):
            if not self._commands(client):
                with self._errors(self.root):
                    yield from self._pipelined_get(sftp, keys)
                return
            with self._errors(self.root):
                channel = self._command(client, f"cd {shlex.quote(self.root)} && exec tar -cf - -- "
                                                f"{self._quoted(keys)}")
            try:
                with self._errors(self.root), tarfile.open(fileobj=channel.makefile("rb", layout.CHUNK),
                                                           mode="r|") as tar:
                    self._count(1)
                    for member in tar:
                        reader = tar.extractfile(member) if member.isfile() else None
                        if reader is not None:
                            yield member.name, iter(lambda: reader.read(layout.CHUNK), b"")
            except tarfile.TarError as exc:  # the stream broke off or is not tar: what it lacks goes one by one
                raise TransientError(f"the tar stream from {self.where} broke off: {exc}") from None
            finally:
                channel.close()

    def put_many(self, items: Sequence[Tuple[bytes, str]]) -> None:
        """One ``tar -xf -`` of the objects into a fresh folder beside them, then each renamed into place (one
        ``mv`` per folder); the folder goes whatever happens (and :meth:`exists` sweeps one a killed shell left).
        A failed batch is put again one by one; each object takes its key whole, by a rename.  Where no command
        runs, through pipelined SFTP requests (:meth:`_pipelined_put`)."""
        folders: Dict[str, List[str]] = {}
        for _, key in items:
            folders.setdefault(posixpath.dirname(key), []).append(key)

        def move(folder: str, keys: List[str]) -> str:
            return f"mv -f -- {' '.join(BATCH_DIR_VAR + '/' + shlex.quote(k) for k in keys)} {shlex.quote(folder)}/"

        root = shlex.quote(self.root)
        script = (f"set -e; mkdir -p {root}; cd {root}; t={BATCH_PREFIX}{uuid.uuid4().hex}; "
                  f"trap 'rm -rf \"$t\"' EXIT; trap 'exit 1' HUP INT TERM PIPE; mkdir \"$t\"; "
                  f"tar -xf - -C \"$t\"; mkdir -p -- {self._quoted(list(folders))}; "
                  + "; ".join(move(folder, keys) for folder, keys in folders.items()))
        with self._connection() as (client, sftp):
            if not self._commands(client):
                with self._errors(self.root):
                    self._pipelined_put(sftp, items)
                return
            with self._errors(self.root):
                channel = self._command(client, script)
                try:
                    stream = channel.makefile("wb", layout.CHUNK)
                    with tarfile.open(fileobj=stream, mode="w|") as tar:
                        for data, key in items:
                            info = tarfile.TarInfo(key)
                            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
                            tar.addfile(info, io.BytesIO(data))
                    stream.flush()
                    channel.shutdown_write()
                    status = channel.recv_exit_status()
                    self._count(1)
                    if status != 0:
                        error = channel.makefile_stderr("rb").read(2000).decode("utf-8", "replace").strip()
                        raise TransientError(f"a batch upload to {self.where}:{self.root} failed (exit {status}): "
                                             f"{error or 'no message'}")
                finally:
                    channel.close()
        with self._lock:
            self._dirs.update(posixpath.join(self.root, folder) for folder in folders)

    # -- paths ------------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, key)

    def _ensure_dir(self, sftp: paramiko.SFTPClient, folder: str) -> None:
        """Create ``folder`` and its missing parents (another thread may be creating them too)."""
        if folder in self._dirs or folder in ("/", ""):
            return
        try:
            sftp.mkdir(folder)
        except OSError as exc:
            if not self._is_dir(sftp, folder):
                if exc.errno != errno.ENOENT:
                    raise
                self._ensure_dir(sftp, posixpath.dirname(folder))
                with contextlib.suppress(OSError):
                    sftp.mkdir(folder)
                if not self._is_dir(sftp, folder):
                    raise
        with self._lock:
            self._dirs.add(folder)

    @staticmethod
    def _is_dir(sftp: paramiko.SFTPClient, path: str) -> bool:
        try:
            return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
        except FileNotFoundError:
            return False

    # -- the ObjectStore methods -------------------------------------------------------------------

    def exists(self, keys: Sequence[str]) -> Set[str]:
        """One ``find`` of the keys' folders where commands run (:meth:`_found`), else their listings
        (``files/md5/xx``), pipelined (:meth:`_listed`) unless batches are off; never a stat per key.  What killed
        uploads left in those folders goes (:meth:`_sweep`)."""
        if not keys:
            return set()
        with self._connection() as (client, sftp):
            if self._commands(client):
                return self._found(client, sftp, keys)
            listings = self._listed(sftp, sorted({key.rpartition("/")[0] for key in keys})) if self.batch else {}

            def list_folder(folder: str) -> List[str]:
                path = self._path(folder)
                with self._errors(path):
                    try:
                        names = listings[folder] if self.batch else sftp.listdir(path)
                    except FileNotFoundError:
                        return []
                    self._sweep(sftp, path, names)
                with self._lock:
                    self._dirs.add(path)
                return names

            return layout.listed(keys, list_folder)

    def _listed(self, sftp: paramiko.SFTPClient, folders: Sequence[str]) -> Dict[str, List[str]]:
        """The names in each folder, listed over SFTP with the requests of all folders pipelined (open them
        all, read them all until their ends, close them all); FileNotFoundError for a folder that is not there."""
        pipe = _Pipeline(sftp, self._count)
        with self._errors(self.root):
            opened = pipe.send({f: (CMD_OPENDIR, self._path(f)) for f in folders})
            handles = {f: msg.get_binary() for f, (t, msg) in opened.items() if t == CMD_HANDLE}
            names: Dict[str, List[str]] = {f: [] for f in handles}
            try:
                reading = set(handles)
                while reading:
                    for f, (t, msg) in pipe.send({f: (CMD_READDIR, handles[f]) for f in reading}).items():
                        if t != CMD_NAME:  # its end (or a failure: the names read so far)
                            reading.discard(f)
                            continue
                        for _ in range(msg.get_int()):
                            name, longname = msg.get_text(), msg.get_text()
                            SFTPAttributes._from_msg(msg, name, longname)  # read past the attributes
                            names[f].append(name)
            finally:
                pipe.send({f: (CMD_CLOSE, handle) for f, handle in handles.items()})
        return _Listings(names)

    def _found(self, client: paramiko.SSHClient, sftp: paramiko.SFTPClient, keys: Sequence[str]) -> Set[str]:
        """The keys held, by one ``find`` of their folders on an exec channel; batch folders that a killed shell
        left in the root for :data:`ABANDONED` seconds go, and temp files in the folders as :meth:`_sweep` says."""
        folders = sorted({posixpath.dirname(key) for key in keys})
        command = (f"cd {shlex.quote(self.root)} 2>/dev/null || exit 0; find . -maxdepth 1 -name "
                   f"'{BATCH_PREFIX}*' -mmin +{int(ABANDONED // 60)} -exec rm -rf {{}} + 2>/dev/null; "
                   f"find {self._quoted(folders)} -mindepth 1 -maxdepth 1 2>/dev/null; exit 0")
        with self._errors(self.root):
            channel = self._command(client, command)
            try:
                channel.shutdown_write()
                listed = channel.makefile("rb").read().decode("utf-8", "surrogateescape").splitlines()
                self._count(1)
            finally:
                channel.close()
        temp: Dict[str, List[str]] = {}
        for path in listed:
            folder, _, name = path.rpartition("/")
            if TEMP_NAME.fullmatch(name):
                temp.setdefault(folder, []).append(name)
        for folder, names in temp.items():
            with self._errors(folder):
                self._sweep(sftp, self._path(folder), names)
        held = set(listed)
        with self._lock:
            self._dirs.update(self._path(path.rpartition("/")[0]) for path in held)
        return {key for key in keys if key in held}

    @staticmethod
    def _sweep(sftp: paramiko.SFTPClient, folder: str, names: Sequence[str]) -> None:
        """Remove the temp files in ``folder`` (whose ``names`` were just listed) not written to for
        :data:`ABANDONED` seconds: uploads that were killed.

        Every push lists the folders it uploads to (:meth:`exists`), so the common case, no temp file,
        costs nothing; each temp file costs a stat.  A fresh one stays: another client may be uploading
        it right now (its mtime moves with every write).  The remote's mtime is compared with this
        machine's clock, and the hour's margin absorbs ordinary clock skew."""
        cutoff = time.time() - ABANDONED
        for name in filter(TEMP_NAME.fullmatch, names):
            path = posixpath.join(folder, name)
            with contextlib.suppress(OSError):  # renamed by its uploader meanwhile, or not ours to remove
                written = sftp.stat(path).st_mtime
                if written is not None and written < cutoff:
                    sftp.remove(path)

    def put(self, src: Path, key: str) -> None:
        """Upload to ``.<name>.<uuid>.tmp`` beside the target (pipelined), then ``posix_rename`` it -- only
        if the bytes sent are the md5 the key names: a corrupt local file never takes the key."""
        target = self._path(key)
        md5, digest = layout.content_md5(key), hashlib.md5()
        folder, name = posixpath.split(target)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        with open(src, "rb") as local, self._session() as sftp:
            with self._errors(folder):
                self._ensure_dir(sftp, folder)
            try:
                with self._errors(target):
                    try:
                        remote = sftp.open(tmp, "wb", bufsize=0)  # unbuffered: we write large blocks
                    except FileNotFoundError:  # the folder vanished since we made or listed it
                        with self._lock:
                            self._dirs.discard(folder)
                        raise TransientError(f"{self.where}:{folder} disappeared during the upload") from None
                    with remote:
                        remote.MAX_REQUEST_SIZE = self._request
                        remote.set_pipelined(True)
                        for block in iter(lambda: local.read(self._request), b""):
                            digest.update(block)
                            remote.write(block)  # one SFTP write request each, answered later
                    if md5 and digest.hexdigest() != md5:
                        raise CorruptSource(src, md5)
                    sftp.posix_rename(tmp, target)
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(tmp)
                raise

    def get(self, key: str, dst: BinaryIO) -> None:
        """Stream ``key`` into ``dst`` with paramiko's prefetch (reads sent ahead, answered in order)."""
        path = self._path(key)
        with self._session() as sftp, contextlib.closing(self._chunks(sftp, path, key)) as chunks:
            for chunk in chunks:
                dst.write(chunk)  # outside _errors: a local write error stays what it is

    def _chunks(self, sftp: paramiko.SFTPClient, path: str, key: str) -> Iterator[bytes]:
        """The object's bytes: open, fstat, then exactly ``size`` bytes (no read to find the end), so a small
        object costs four round trips; a larger one is prefetched (paramiko sends all reads at once, from a
        thread of its own: not worth it for one read)."""
        with self._errors(path, key), sftp.open(path, "rb") as remote:
            remote.MAX_REQUEST_SIZE = self._request
            left = remote.stat().st_size or 0
            if left > self._request:
                remote.prefetch(left)
            while left > 0:
                chunk = remote.read(min(left, self._request))  # one reply: paramiko joins no pieces
                if not chunk:
                    return  # shorter than its size said: the engine's md5 check refuses it
                left -= len(chunk)
                yield chunk

    def close(self) -> None:
        """Close the idle sessions (called after the last transfer, when none is borrowed)."""
        while True:
            try:
                client, _ = self._idle.get_nowait()
            except queue.Empty:
                return
            client.close()
