"""The fault tests' tools: a TCP proxy that can be cut (every connection dropped, new ones
refused) and restored, a private Redis server that can be restarted, real `jewelcut worker`
processes that can be killed (and are started again like compose's restart policy), and the rig
that holds one test's deployment together."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from jewelcut.db import Image, Segmentation, session_scope
from jewelcut.settings import Settings
from jewelcut.storage import get_storage
from tests.local_servers import free_port

WORKER_MAIN = Path(__file__).with_name("worker_main.py")
LOOPBACK = "127.0.0.1"
# Worker environment that keeps each chunk in flight long enough for a fault to hit it: one I/O
# thread, and every source read delayed (worker_main.py).
SLOW_READS = {"JEWELCUT_IO_THREADS": "1", "JEWELCUT_TEST_READ_DELAY_S": "0.25"}


def eventually(condition: Callable[[], bool], timeout_s: float = 30, what: str = "") -> None:
    """Poll `condition` until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not after {timeout_s}s: {what or condition}")
        time.sleep(0.05)


# ----------------------------------------------------------------------------- TCP proxy ---


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a dying server's kernel would. shutdown() first: close() alone
    leaves the connection open while a pump thread is blocked reading it, and then the server
    side of a cut connection lived on (a claim's transaction with it, holding its row locks
    against the claim retried on a new connection: a chunk waited for ever)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:port to a server. `cut()` resets every open connection and refuses
    new ones (each refused connection is counted) until `restore()`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.refused = 0
        self.forwarded = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self.up = False
            sockets, self._open = self._open, set()
        for sock in sockets:
            _reset(sock)

    def restore(self) -> None:
        self.up = True

    @contextlib.contextmanager
    def outage(self, seconds: float, limit_s: float = 120) -> Iterator[None]:
        """Cut for `seconds`, and on until a connection was refused (at most `limit_s`): a worker
        busy with a long inference may not reach for the server within `seconds`."""
        self.cut()
        try:
            time.sleep(seconds)
            eventually(lambda: self.refused >= 1, limit_s, "a connection refused in the outage")
            yield
        finally:
            self.restore()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            self.forwarded += 1
            with self._lock:
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, sink}
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()


# ------------------------------------------------------------------------- private Redis ---


class RedisServer:
    """A redis-server of the test's own (no persistence: a restart loses every message)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", LOOPBACK]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        self._wait_for_ping()

    def crash(self) -> None:
        """SIGKILL: queued and unacknowledged messages are gone."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.crash()

    def _wait_for_ping(self, timeout_s: float = 10) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server on port {self.port} did not answer")


# ------------------------------------------------------------------------ worker process ---


@dataclass
class WorkerProcess:
    """`jewelcut worker` (solo pool) in its own process, JSON logs appended to `log_path`."""

    name: str
    arguments: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    exit_codes: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    _ready_before: int = field(default=0, init=False, repr=False)

    def start(self) -> None:
        self._ready_before = self._ready_count()
        command = [sys.executable, str(WORKER_MAIN), "worker", "--device", "cpu", *self.arguments]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.pids.append(self.process.pid)

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until this start's worker logs that it consumes (model loaded, queues bound)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ready_count() > self._ready_before:
                return
            if not self.alive:
                pytest.fail(f"worker {self.name} exited: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        pytest.fail(f"worker {self.name} not ready after {timeout_s}s")

    def _ready_count(self) -> int:
        return sum(record["msg"].endswith(" ready.") for record in self.records())

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal it and wait for it to die (its exit code is recorded when it is revived)."""
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=30)

    def revive(self) -> bool:
        """Start it again if it died (compose's `restart: unless-stopped`); True if it did."""
        if self.process is None or self.process.poll() is None:
            return False
        self.exit_codes.append(self.process.returncode)
        self.start()
        return True

    def stop(self) -> None:
        if not self.alive:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def records(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        parsed = (_json(line) for line in lines if line.startswith("{"))
        return [record for record in parsed if "msg" in record]

    def messages(self, text: str) -> list[dict[str, Any]]:
        return [record for record in self.records() if record["msg"] == text]


def _json(line: str) -> dict[str, Any]:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return {}


# ---------------------------------------------------------------------------------- rig ---


@dataclass
class Rig:
    """One fault test's deployment: test-side settings (Postgres and S3 direct, the broker), the
    environment its workers start from, and the steps of the batch job."""

    settings: Settings
    redis: RedisServer | None
    workdir: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    requeued: int = 0  # by the reaper passes of `settle`
    gave_up: int = 0

    def worker(
        self, name: str, *arguments: str, without: tuple[str, ...] = (), **env: str
    ) -> WorkerProcess:
        """Start a worker process (its environment: this test's, less `without`, plus `env`);
        wait until it consumes."""
        environment = dict(os.environ) | {"JEWELCUT_LOG_JSON": "true", "JEWELCUT_LOG_LEVEL": "INFO"}
        environment = {key: value for key, value in environment.items() if key not in without}
        environment |= env
        process = WorkerProcess(name, list(arguments), environment, self.workdir / f"{name}.log")
        self.workers.append(process)
        process.start()
        process.wait_ready()
        return process

    def catalogue(self, photos: dict[str, bytes]) -> list[str]:
        return catalogue(self.settings, photos)

    def register(self, sources: dict[str, str]) -> None:
        register(self.settings, sources)

    def enqueue(self, image_ids: list[str]) -> int:
        """Record the rows queued and send their chunks on the bulk queue; chunks sent."""
        from jewelcut.enqueue import enqueue_images
        from jewelcut.queue import CeleryChunkQueue

        return enqueue_images(image_ids, self.settings, CeleryChunkQueue(self.settings)).chunks

    def rows(self) -> dict[str, Segmentation]:
        with session_scope(self.settings.resolved_database_url) as session:
            return {row.image_id: row for row in session.scalars(select(Segmentation))}

    def wait_for(
        self, condition: Callable[[dict[str, Segmentation]], bool], timeout_s: float = 60
    ) -> dict[str, Segmentation]:
        """Poll the rows until `condition(rows)`; returns those rows."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = self.rows()
            if condition(rows):
                return rows
            time.sleep(0.02)
        pytest.fail(f"condition not met after {timeout_s}s: {_states(self.rows())}")

    def settle(
        self, expected: int, timeout_s: float = 120, reap_every_s: float | None = None
    ) -> dict[str, Segmentation]:
        """Wait until `expected` rows are done or failed, starting dead workers again and, with
        `reap_every_s`, running a reaper pass that often (as beat would)."""
        from jewelcut.queue import CeleryChunkQueue
        from producer.reaper import reap

        deadline = time.monotonic() + timeout_s
        next_reap = time.monotonic() + (reap_every_s or 0)
        while time.monotonic() < deadline:
            for process in self.workers:
                process.revive()
            if reap_every_s is not None and time.monotonic() >= next_reap:
                result = reap(self.settings, CeleryChunkQueue(self.settings))
                self.requeued += result.requeued
                self.gave_up += result.failed
                next_reap = time.monotonic() + reap_every_s
            rows = self.rows()
            if len(rows) >= expected and all(r.status in ("done", "failed") for r in rows.values()):
                return rows
            time.sleep(0.2)
        pytest.fail(f"rows not finished after {timeout_s}s: {_states(self.rows())}")

    def objects(self) -> tuple[list[str], list[str]]:
        """(cutout keys, preview keys) in the bucket."""
        storage = get_storage(self.settings)
        return list(storage.list("cutouts/")), list(storage.list("previews/"))

    def close(self) -> None:
        for process in self.workers:
            process.stop()
        if self.redis:
            self.redis.stop()


def catalogue(settings: Settings, photos: dict[str, bytes]) -> list[str]:
    """Upload photos as sources (S3, or the local folder) and register them; their IDs, sorted."""
    storage = get_storage(settings)
    register(
        settings,
        {
            image_id: storage.put(f"sources/{image_id}.jpg", data, "image/jpeg")
            for image_id, data in photos.items()
        },
    )
    return sorted(photos)


def register(settings: Settings, sources: dict[str, str]) -> None:
    """Catalogue rows for these {image_id: source_uri}."""
    with session_scope(settings.resolved_database_url) as session:
        for image_id, uri in sources.items():
            session.add(Image(id=image_id, listing_id=f"listing-{image_id}", source_uri=uri))


def _states(rows: dict[str, Segmentation]) -> dict[str, str]:
    return {image_id: f"{row.status}/{row.reason}/{row.attempts}" for image_id, row in rows.items()}


def check_exactly_once(
    rig: Rig, image_ids: list[str], failed: tuple[str, ...] = ()
) -> tuple[int, int]:
    """Every image has one row, done (but those in `failed`), one preview and one cutout when
    accepted, and nothing else is in the bucket; returns (rows checked, objects checked)."""
    from jewelcut.storage import cutout_key, preview_key

    rows = rig.rows()
    assert sorted(rows) == sorted([*image_ids, *failed])
    assert all(rows[i].status == "failed" for i in failed)
    assert all(rows[i].status == "done" for i in image_ids), _states(rows)
    cutouts, previews = rig.objects()
    version = rows[image_ids[0]].model_version
    assert sorted(previews) == sorted(preview_key(version, i) for i in image_ids)
    accepted = [i for i in image_ids if rows[i].decision == "accepted"]
    assert sorted(cutouts) == sorted(cutout_key(version, i) for i in accepted)
    return len(rows), len(cutouts) + len(previews)
