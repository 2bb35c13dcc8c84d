"""Artifact push/pull next to `dvc push`/`dvc pull` and the raw copy floor, on the same workspace.

Shapes (as the transfer issues define them):
  big   one 200 MB file
  many  200 files of 64 KB, each its own artifact
  dir   one directory artifact of 2000 files of 4 KB
  tiny  one directory artifact of 10,000 files of 1 KB
For each shape and round, the contenders run one after the other on the
same data (order rotated per round); the table gives medians and ratios.
Also: a no-op re-push of the shape (everything already on the remote).
With sshremote, ``cmf-sftp`` is cmf with ``CMF_SSH_BATCH=0`` (every object over SFTP, one by
one: the path before batches), and the round trips each cmf run waited for
(``transport.round_trips`` of its result) are reported per 1,000 objects.

    .venv/bin/python bench/transfer.py [--backend local|minioS3|amazonS3|sshremote|osdfremote]
                                       [--rounds 3] [--shapes big,many,dir,tiny] [--workdir DIR]
                                       [--latency MS] [--no-floor]

``--latency MS`` (sshremote) puts a relay between every client and sshd that holds each piece of
data for MS/2 ms in each direction (:class:`DelayRelay`): MS ms more on every round trip, for cmf,
dvc and the floor alike.  (This machine's kernel has no netem: ``tc qdisc add dev lo root netem``
answers "Specified qdisc kind is unknown", CONFIG_NET_SCH_NETEM is not set.)

Results go to bench/results/transfer_<backend>.json: the medians, and under "rounds" every
round's time.  The floor, per backend (one object after the other, into/from the same
files/md5/xx/... layout; clients opened before timing):
  local       shutil.copyfile per object;
  minioS3,    the raw SDK per object (boto3 upload_file/download_file with the default
  amazonS3    TransferConfig; minio fput_object/fget_object), against a `rclone serve s3`
              the benchmark starts on loopback;
  sshremote   one paramiko SSHClient + open_sftp() session, sftp.put/sftp.get per object
              (paramiko's defaults: pipelined writes, prefetched reads), against a real
              OpenSSH sshd on loopback (cmf_core.testing.sshd, key login, known_hosts file);
              dvc runs with HOME pointed at a private home that trusts the server;
  osdfremote  a streamed HTTP PUT (file body) / GET (iter_content, 1 MiB) per object with a
              bearer token through one requests.Session, against Debian's XRootD behind the
              token-checking Pelican stand-in front (cmf_core.testing.origin); cmf reads the
              JWT from a token file, dvc uses the copy `cmf init` writes to .dvc/config.local.
The servers are started by the benchmark and stopped by PID when it ends.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import posixpath
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from unittest import mock
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmf_core import api  # noqa: E402
from cmflib.cmf import Cmf  # noqa: E402

DVC = os.path.join(os.path.dirname(sys.executable), "dvc")
MANY_FILES = 500  # a tree with more files than this is moved aside, not deleted (see clear)


def make_shape(ws: Path, shape: str) -> List[str]:
    """Write the shape's data into the workspace; return the artifact paths to log."""
    if shape == "big":
        with open(ws / "big.bin", "wb") as fh:
            for i in range(200):
                fh.write(os.urandom(1 << 20))
        return ["big.bin"]
    if shape == "many":
        (ws / "many").mkdir()
        for i in range(200):
            (ws / "many" / f"f{i:03d}.bin").write_bytes(os.urandom(64 << 10))
        return [f"many/f{i:03d}.bin" for i in range(200)]
    if shape == "tiny":
        for i in range(10000):
            sub = ws / "tiny" / f"d{i % 100:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"x{i:05d}.bin").write_bytes(os.urandom(1 << 10))
        return ["tiny"]
    for i in range(2000):
        sub = ws / "tree" / f"d{i % 40:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"x{i:04d}.bin").write_bytes(os.urandom(4 << 10))
    return ["tree"]


def cache_objects(ws: Path) -> List[Path]:
    return [p for p in (ws / ".dvc" / "cache" / "files").rglob("*") if p.is_file()]


def clear(path: Path) -> None:
    """Remove the tree ``path`` (untimed, between contenders).  A tree of many files is moved aside
    instead, and goes with the benchmark's temp directory at the end: on an ext4 without a journal,
    as this VM's root file system, creating a file skips, one by one, every inode of its block group
    deleted in the last 60 to 360 seconds (``recently_deleted`` in ext4's inode allocator); 4000
    creates took 1.6-2.9 s after such deletions and 0.09 s in a clean group, so the contender that
    ran after a deletion of thousands of files would pay for it."""
    if not path.exists():
        return
    if next(itertools.islice(path.rglob("*"), MANY_FILES, None), None) is None:
        shutil.rmtree(path)
    else:
        path.rename(path.parent / f".trash-{uuid.uuid4().hex}")


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    outcome = action()
    elapsed = time.perf_counter() - start
    if outcome is not None and hasattr(outcome, "ok") and not outcome.ok:
        raise SystemExit(f"transfer failed: {outcome.failed[:3]}")
    return elapsed


def warm_memory(folder: Path, mib: int = 2048) -> None:
    """Write and delete ``mib`` MiB once, before anything is timed.  On this VM, memory the guest has
    never touched costs about ten times as much the first time (writing 400 MB: 1.13 s, then 0.093 s
    in the same process and in the next), and whichever contender first needs more page cache than
    the others freed would pay it; the kernel hands out recently freed pages first."""
    block = os.urandom(8 << 20)
    warm = folder / "warm-memory"
    with open(warm, "wb") as fh:
        for _ in range(mib // 8):
            fh.write(block)
    warm.unlink()


class Target:
    """What every target has unless it says otherwise."""

    dvc_env: Dict[str, str] = {}
    #: more cmf contenders: name -> environment under which cmf runs
    variants: Dict[str, Dict[str, str]] = {}

    def settle(self, store: Path) -> None:
        """Untimed, after the pushes of a round: anything the server does once per new object."""

    def close(self) -> None:
        pass


class LocalTarget(Target):
    """The local backend: the store is a directory; the floor is shutil.copyfile."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def options(self, shape: str) -> Tuple[Dict[str, str], Path]:
        store = self.root / f"{shape}-store"
        return {"path": str(store)}, store

    def floor_put(self, src: Path, key: str, store: Path) -> None:
        target = store / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)

    def floor_get(self, key: str, dst: Path, store: Path) -> None:
        shutil.copyfile(store / key, dst)

    def empty(self, store: Path) -> None:
        clear(store)


class S3Target(Target):
    """minioS3 or amazonS3 against a local `rclone serve s3`; the floor is the raw SDK per object."""

    def __init__(self, root: Path, backend: str) -> None:
        from cmf_core.testing.servers import S3Server

        self.name = backend
        self.server = S3Server(root / "s3")
        self.server.start()
        if backend == "amazonS3":
            import boto3

            self.client = boto3.client("s3", endpoint_url=self.server.endpoint, region_name="us-east-1",
                                       aws_access_key_id=S3Server.ACCESS_KEY,
                                       aws_secret_access_key=S3Server.SECRET_KEY)
        else:
            from minio import Minio

            self.client = Minio(self.server.endpoint.split("//")[1], access_key=S3Server.ACCESS_KEY,
                                secret_key=S3Server.SECRET_KEY, secure=False)

    def options(self, shape: str) -> Tuple[Dict[str, str], Path]:
        from cmf_core.testing.servers import S3Server

        bucket = self.server.bucket(f"bench-{shape}")
        options = {"url": f"s3://{bucket}", "endpoint_url": self.server.endpoint,
                   "access_key_id": S3Server.ACCESS_KEY, "secret_key": S3Server.SECRET_KEY}
        if self.name == "amazonS3":
            options["region"] = "us-east-1"
        return options, self.server.root / bucket

    def floor_put(self, src: Path, key: str, store: Path) -> None:
        if self.name == "amazonS3":
            self.client.upload_file(str(src), store.name, key)
        else:
            self.client.fput_object(store.name, key, str(src))

    def floor_get(self, key: str, dst: Path, store: Path) -> None:
        if self.name == "amazonS3":
            self.client.download_file(store.name, key, str(dst))
        else:
            self.client.fget_object(store.name, key, str(dst))

    def empty(self, store: Path) -> None:
        """Delete every object through the S3 API (rclone caches listings: deleting files behind it misleads it)."""
        client = self.admin()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=store.name, Delete={"Objects": keys})

    def settle(self, store: Path) -> None:
        """rclone works out an object's md5 (its ETag) when the object is first asked for: about 0.3 s of
        its CPU for 200 MB, which the first contender to pull would pay.  A HEAD of each big object pays it."""
        client = self.admin()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.name):
            for listed in page.get("Contents", []):
                if listed["Size"] > 1 << 20:
                    client.head_object(Bucket=store.name, Key=listed["Key"])

    def admin(self):
        """A boto3 client for the benchmark's own housekeeping (never timed)."""
        import boto3

        from cmf_core.testing.servers import S3Server

        return boto3.client("s3", endpoint_url=self.server.endpoint, region_name="us-east-1",
                            aws_access_key_id=S3Server.ACCESS_KEY, aws_secret_access_key=S3Server.SECRET_KEY)

    def close(self) -> None:
        self.server.stop()


class SSHTarget(Target):
    """sshremote against a real sshd on loopback (key login); the floor is one paramiko SFTP session."""

    name = "sshremote"
    variants = {"cmf-sftp": {"CMF_SSH_BATCH": "0"}}

    def __init__(self, root: Path, latency_ms: float = 0.0) -> None:
        import paramiko

        from cmf_core.testing.sshd import SSHServer

        self.server, self.client, self.relay = SSHServer(), paramiko.SSHClient(), None
        try:
            self.server.start()
            self.port = self.server.port
            if latency_ms:
                self.relay = DelayRelay(self.server.port, latency_ms / 2000)
                self.port = self.relay.port
            entry = f"[127.0.0.1]:{self.port} {self.server.host_public_key}\n"
            self.known_hosts = self.server.base / "known_hosts"
            self.known_hosts.write_text(entry)
            # dvc-ssh (sshfs -> asyncssh, known_hosts=None) checks no host key; trust the server where it would look
            (root / "home" / ".ssh").mkdir(parents=True)
            (root / "home" / ".ssh" / "known_hosts").write_text(entry)
            self.dvc_env = {"HOME": str(root / "home"), "SSH_AUTH_SOCK": ""}
            self.client.load_host_keys(str(self.known_hosts))
            self.client.connect("127.0.0.1", self.port, self.server.user, allow_agent=False,
                                key_filename=str(self.server.client_key), look_for_keys=False)
            self.sftp = self.client.open_sftp()
        except BaseException:
            self.close()
            raise
        self.dirs: set = set()  # remote folders the floor has made since the last empty()

    def options(self, shape: str) -> Tuple[Dict[str, str], Path]:
        store = self.server.remote_dir(f"bench-{shape}")
        return {"path": f"ssh://127.0.0.1:{self.port}{store}", "user": self.server.user,
                "key_file": str(self.server.client_key), "known_hosts": str(self.known_hosts)}, Path(store)

    def floor_put(self, src: Path, key: str, store: Path) -> None:
        folder = str(store)
        for part in ["", *posixpath.dirname(key).split("/")]:  # make each missing folder once, as a store must
            folder = f"{folder}/{part}" if part else folder
            if folder not in self.dirs:
                try:
                    self.sftp.mkdir(folder)
                except OSError:
                    pass  # already there
                self.dirs.add(folder)
        self.sftp.put(str(src), f"{store}/{key}")

    def floor_get(self, key: str, dst: Path, store: Path) -> None:
        self.sftp.get(f"{store}/{key}", str(dst))

    def empty(self, store: Path) -> None:
        clear(store)  # sshd caches no listing: removing the files behind it is enough
        self.dirs.clear()

    def close(self) -> None:
        self.client.close()  # also closes the SFTP channel
        if self.relay is not None:
            self.relay.close()
        self.server.cleanup()  # stops sshd by PID, removes its keys and remote data


class DelayRelay:
    """A TCP relay on a free loopback port to ``127.0.0.1:upstream`` that hands each piece of data on ``delay``
    seconds after it arrived, in each direction, in order: a network whose round trips take 2 × ``delay`` longer
    (bandwidth is not limited).  An asyncio loop in a thread of its own."""

    def __init__(self, upstream: int, delay: float) -> None:
        import asyncio

        self.upstream, self.delay = upstream, delay
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name="delay-relay", daemon=True)
        self.thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        import asyncio

        async def serve() -> None:
            self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()

        self.loop.run_until_complete(serve())
        self.loop.run_forever()

    async def _connection(self, reader, writer) -> None:
        import asyncio

        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except asyncio.CancelledError:  # the relay is closing: the connection goes with it
            for each in (writer, up_writer):
                each.close()

    async def _pump(self, reader, writer) -> None:
        """Read as it comes; write each piece ``delay`` after its arrival (a queue keeps the order)."""
        import asyncio

        queue: "asyncio.Queue" = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    break
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.close()

        sender = self.loop.create_task(deliver())
        try:
            while True:
                data = await reader.read(1 << 16)
                await queue.put((self.loop.time() + self.delay, data or None))
                if not data:
                    break
        except OSError:
            await queue.put((self.loop.time(), None))
        with contextlib.suppress(OSError, ConnectionError):
            await sender

    def close(self) -> None:
        """Stop listening, drop the connections, end the loop's thread."""
        import asyncio

        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class OSDFTarget(Target):
    """osdfremote: XRootD behind the token-checking Pelican stand-in front; the floor is plain streamed HTTP."""

    name = "osdfremote"
    ISSUER, NAMESPACE = "https://issuer.cmf.invalid", "ns"

    def __init__(self, root: Path) -> None:
        import requests

        from cmf_core.testing.origin import PelicanStandIn, XRootDOrigin, jwt_token, signing_key

        self.front, self.xrootd, home = None, XRootDOrigin(), root / "osdf"
        try:
            self.xrootd.start()
            home.mkdir()
            key, public = signing_key(home)
            self.front = PelicanStandIn("origin", home / "front", upstream=self.xrootd.url, public_key=public,
                                        issuer=self.ISSUER, namespace=f"/{self.NAMESPACE}")
            self.front.start()
            token = jwt_token(key, self.ISSUER, lifetime=12 * 3600)
            self.token_file = home / "token"
            self.token_file.write_text(token + "\n")
            self.session = requests.Session()  # one pool for every floor request
            self.session.headers.update({"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"})
        except BaseException:
            self.close()
            raise

    def options(self, shape: str) -> Tuple[Dict[str, str], Path]:
        return ({"path": f"{self.front.url}/{self.NAMESPACE}/bench-{shape}", "access_token": str(self.token_file)},
                self.xrootd.data / self.NAMESPACE / f"bench-{shape}")

    def url(self, key: str, store: Path) -> str:
        return f"{self.front.url}/{self.NAMESPACE}/{store.name}/{key}"

    def floor_put(self, src: Path, key: str, store: Path) -> None:
        with open(src, "rb") as body:  # a file body: requests streams it with its Content-Length
            self.session.put(self.url(key, store), data=body).raise_for_status()

    def floor_get(self, key: str, dst: Path, store: Path) -> None:
        with self.session.get(self.url(key, store), stream=True) as resp, open(dst, "wb") as out:
            resp.raise_for_status()
            for chunk in resp.iter_content(1 << 20):
                out.write(chunk)

    def empty(self, store: Path) -> None:
        clear(store)  # XRootD caches no listing (and cmf asks with HEADs); PUT makes missing folders

    def close(self) -> None:
        if getattr(self, "session", None):
            self.session.close()
        if self.front:
            self.front.stop()
        self.xrootd.cleanup()  # stops xrootd by PID and removes its data


def bench_shape(target, root: Path, shape: str, rounds: int, floor: bool = True) -> Dict[str, Dict[str, float]]:
    ws = root / shape
    ws.mkdir()
    options, store = target.options(shape)
    api.init(target.name, options, git_remote_url="/dev/null", workspace=ws)
    os.chdir(ws)
    paths = make_shape(ws, shape)
    cmf = Cmf(filepath="mlmd", pipeline_name=shape)
    cmf.create_context("make")
    cmf.create_execution("Make")
    for path in paths:
        cmf.log_dataset(path, "output")
    cmf.finalize()
    cache = ws / ".dvc" / "cache"
    objects = cache_objects(ws)
    data_paths = [ws / p for p in paths]
    landing = root / f"{shape}-floor"  # where the floor's downloads land

    def reset_store() -> None:
        target.empty(store)

    def reset_workspace() -> None:
        for p in data_paths:
            clear(p) if p.is_dir() else p.unlink(missing_ok=True)
        clear(cache)

    def floor_push() -> None:
        for obj in objects:
            target.floor_put(obj, str(obj.relative_to(cache)), store)

    def floor_pull() -> None:
        for obj in objects:  # every object fetched once, to a fresh file
            dst = landing / obj.relative_to(cache)
            dst.parent.mkdir(parents=True, exist_ok=True)
            target.floor_get(str(obj.relative_to(cache)), dst, store)

    dvc_env = {**os.environ, **target.dvc_env}
    trips: Dict[str, Dict[str, List[int]]] = {"push": {}, "pull": {}}

    def cmf(op: str, name: str, env: Dict[str, str]) -> Callable[[], object]:
        def run() -> object:
            with mock.patch.dict(os.environ, env):
                result = (api.artifact_push if op == "push" else api.artifact_pull)(shape, progress=False)
            if "round_trips" in result.transport:
                trips[op].setdefault(name, []).append(int(result.transport["round_trips"]))
            return result
        return run

    cmfs = {"cmf": {}, **target.variants}
    pushers = {**{name: cmf("push", name, env) for name, env in cmfs.items()},
               "dvc": lambda: subprocess.run([DVC, "push", "-q"], check=True, env=dvc_env), "floor": floor_push}
    pullers = {**{name: cmf("pull", name, env) for name, env in cmfs.items()},
               "dvc": lambda: subprocess.run([DVC, "pull", "-q"], check=True, env=dvc_env), "floor": floor_pull}
    if not floor:  # one object after another: under added latency, minutes of a floor nobody needs
        del pushers["floor"], pullers["floor"]
    times: Dict[str, Dict[str, List[float]]] = {"push": {k: [] for k in pushers},
                                                  "pull": {k: [] for k in pullers}}
    names = list(pushers)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            reset_store()
            times["push"][name].append(timed(pushers[name]))
        target.settle(store)
        for name in order:
            reset_workspace()
            clear(landing)
            times["pull"][name].append(timed(pullers[name]))
        reset_workspace()  # untimed: bring data and cache back for the next round's pushes
        api.artifact_pull(shape, progress=False)
    noop = statistics.median(timed(lambda: api.artifact_push(shape, progress=False)) for _ in range(3))
    os.chdir(root)
    result = {op: {name: statistics.median(values) for name, values in by.items()} for op, by in times.items()}
    result["noop_push"] = {"cmf": noop}
    result["objects"] = len(objects)
    result["round_trips_per_1000"] = {op: {name: statistics.median(values) * 1000 / len(objects)
                                           for name, values in by.items()} for op, by in trips.items()}
    result["rounds"] = times  # every round's time, in the JSON only: the medians hide how the rounds differ
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", default="big,many,dir")
    parser.add_argument("--workdir", default=None,
                        help="folder for the benchmark's temporary files (default: the system's temp folder); "
                             "see bench/README.md for why it matters on ext4 without a journal")
    parser.add_argument("--backend", default="local",
                        choices=["local", "minioS3", "amazonS3", "sshremote", "osdfremote"])
    parser.add_argument("--no-floor", action="store_true", help="leave out the floor (one object after another)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="MS",
                        help="add MS ms to every round trip: rerun inside a network namespace with netem on lo")
    args = parser.parse_args()
    if args.latency and args.backend != "sshremote":
        parser.error("--latency is for --backend sshremote")
    for key, value in {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x",
                       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}.items():
        os.environ.setdefault(key, value)
    results = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        targets = {"local": LocalTarget, "sshremote": SSHTarget, "osdfremote": OSDFTarget}
        if args.backend == "sshremote":
            target = SSHTarget(Path(tmp), args.latency)
        else:
            target = targets[args.backend](Path(tmp)) if args.backend in targets else S3Target(Path(tmp), args.backend)
        warm_memory(Path(tmp))
        try:
            for shape in args.shapes.split(","):
                results[shape] = bench_shape(target, Path(tmp), shape, args.rounds, not args.no_floor)
        finally:
            target.close()
    latency = args.latency
    print(f"{args.backend} backend{f', {latency:g} ms added to each round trip' if latency else ''}, median of "
          f"{args.rounds} rounds (seconds; dvc/cmf = how many times faster cmf is than dvc)")
    for shape, res in results.items():
        contenders = [name for name in res["push"] if name not in ("dvc", "floor")]
        others = [name for name in ("dvc", "floor") if name in res["push"]]
        print(f"{'shape':6} {'op':5} " + " ".join(f"{name:>9}" for name in [*contenders, *others])
              + " " + " ".join(f"{'dvc/' + name:>13}" for name in contenders)
              + "   round trips / 1000 objects")
        for op in ("push", "pull"):
            t = res[op]
            trips = res["round_trips_per_1000"][op]
            print(f"{shape:6} {op:5} " + " ".join(f"{t[name]:9.3f}" for name in [*contenders, *others])
                  + " " + " ".join(f"{t['dvc'] / t[name]:13.2f}" for name in contenders)
                  + "   " + ", ".join(f"{name} {value:,.0f}" for name, value in trips.items()))
        print(f"{shape:6} {res['objects']} objects; no-op re-push: {res['noop_push']['cmf']:.3f} s")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    suffix = f"_latency{latency:g}ms" if latency else ""
    (out / f"transfer_{args.backend}{suffix}.json").write_text(json.dumps(results, indent=2))



if __name__ == "__main__":
    main()
