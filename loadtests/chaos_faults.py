"""Processes and faults for ``chaos.py``: a private PostgreSQL cluster and redis-server, the mock
upstream and ``tuneloop serve`` (``Env``, which also kills them all), the gateway's children found
through /proc, a tmpfs for the spool, and Prometheus text parsing. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from loadgen import free_port

from gateway.config import GatewayConfig
from gateway.log import relay
from gateway.settings import Settings

SPOOL_BIG, SPOOL_SMALL = "256m", "2m"  # the spool's tmpfs: roomy, and shrunk for disk_full

# ------------------------------------------------------------------ PostgreSQL


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PgCluster:
    """``initdb`` + ``pg_ctl`` in a temp folder (as the ``postgres`` user when run as root);
    the same approach as tests/fixtures/database.py, copied so that loadtests never import tests."""

    def __init__(self, port: int) -> None:
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.pg_ctl, self.port = pg_ctl, port
        self.root = Path(tempfile.mkdtemp(prefix="tuneloop-chaos-pg-"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.root}'\nfsync = off\n")
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(self.as_user + cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start"])
        psycopg.connect(self.url, connect_timeout=10).close()

    def stop(self, mode: str = "fast") -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"])

    def cleanup(self, keep: bool) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------ processes


def start(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A child in its own process group (so that its own children die with it)."""
    out = open(log_path, "ab")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            stdin=subprocess.DEVNULL, start_new_session=True)


def kill_group(p: subprocess.Popen | None, grace: float = 5.0) -> None:
    """SIGTERM the leader (it stops its own children), wait ``grace`` s, then SIGKILL whatever is
    left of its process group (the log-writer child ignores SIGTERM; a stopped one too is killed)."""
    if p is None:
        return
    with contextlib.suppress(ProcessLookupError):
        p.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(5)


class Redis:
    """``redis-server`` on a fixed loopback port, no persistence; stop (SIGTERM) and start again."""

    def __init__(self, port: int, log_path: Path) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server not found (apt-get install -y redis-server)")
        self.cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.port, self.log_path, self.proc = port, log_path, None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        self.proc = start(self.cmd, self.log_path)
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before port {port} opened")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not open after {timeout}s")


def children(parent: int) -> list[tuple[int, list[str]]]:
    """Direct children of ``parent``: (pid, argv)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            out.append((int(proc.name), argv))
    return out


def engine_child(parent: int) -> int | None:
    """The engine child (``gateway.cli engine ...``: an argv element exactly ``engine``)."""
    return next((pid for pid, argv in children(parent) if "engine" in argv), None)


def writer_child(parent: int) -> int | None:
    return next((pid for pid, argv in children(parent) if "gateway.log.child" in argv), None)


def state(pid: int) -> str:
    """The process's state letter (R, S, T for stopped, Z), or '-' if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "-"


def signal_pid(pid: int | None, sig: int) -> bool:
    """Send ``sig`` to ``pid``; whether it was there to get it."""
    with contextlib.suppress(ProcessLookupError):
        if pid is not None:
            os.kill(pid, sig)
            return True
    return False


# ------------------------------------------------------------------ disk


def mount_tmpfs(path: Path, size: str = "2m") -> str | None:
    """Mount a tmpfs at ``path``; None on success, else why not."""
    path.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True, timeout=30)
    return None if p.returncode == 0 else (p.stderr.strip() or f"mount exited {p.returncode}")


def fill(path: Path, leave_bytes: int) -> int:
    """Write a filler file into ``path`` so that about ``leave_bytes`` stay free; its size."""
    size = max(0, free_bytes(path) - leave_bytes)
    with open(path / "filler.bin", "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * size)
    return size


def free_bytes(path: Path) -> int:
    return os.statvfs(path).f_bavail * os.statvfs(path).f_frsize


# ------------------------------------------------------------------ the run's processes


def wait_ready(root: str, proc: subprocess.Popen | None, timeout: float) -> float:
    """Poll /health/ready until 200; seconds waited (raises if the gateway dies or time runs out)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"tuneloop serve exited with {proc.returncode} (see serve.log)")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{root}/health/ready", timeout=3).status_code == 200:
                return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"{root} not ready after {timeout:.0f} s")


class Env:
    """Everything the run starts (PostgreSQL, Redis, the mock, ``tuneloop serve``) and its clean-up."""

    def __init__(self, root: Path, model: str, keep_tmp: bool, tmpfs_size: str | None) -> None:
        self.repo, self.model, self.keep_tmp, self.tmpfs_size = root, model, keep_tmp, tmpfs_size
        self.tmp = Path(tempfile.mkdtemp(prefix="tuneloop-chaos-"))
        self.home, self.cfg = self.tmp / "home", self.tmp / "config.yaml"
        self.spool = self.home / "spool"
        self.pg: PgCluster | None = None
        self.redis: Redis | None = None
        self.mock: subprocess.Popen | None = None
        self.serve: subprocess.Popen | None = None
        self.tmpfs_error: str | None = "not asked for"
        self.tuneloop = [sys.executable, "-m", "gateway.cli"]
        self.env = {**os.environ, "TUNELOOP_HOME": str(self.home), "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "TUNELOOP_TRAINING_RUNNER": "0"}  # no job runner: nothing trains here

    def setup(self) -> None:
        self.home.mkdir(parents=True)
        say(f"[setup] temp dir {self.tmp}")
        self.pg = PgCluster(free_port())
        self.pg.start()
        self.redis = Redis(free_port(), self.tmp / "redis.log")
        self.redis.start()
        mock_port = free_port()
        self.mock = start([sys.executable, str(self.repo / "loadtests/mock_upstream.py"), "--port", str(mock_port)],
                          self.tmp / "mock.log")
        wait_port(mock_port, self.mock)
        say(f"[setup] postgresql :{self.pg.port}, redis :{self.redis.port}, mock :{mock_port}")
        if self.tmpfs_size:
            self.tmpfs_error = mount_tmpfs(self.spool, self.tmpfs_size)
            say(f"[setup] spool tmpfs: {self.tmpfs_error or 'mounted, size=' + self.tmpfs_size}")
        # the engine as gateway.config.embedded_default declares it, plus the mock as a second target
        self.cfg.write_text(json.dumps({
            "database_url": self.pg.url, "redis_url": self.redis.url, "auth": "required",
            "targets": {"engine": {"kind": "vllm", "base_urls": ["http://127.0.0.1:0/v1"], "embedded": True,
                                   "timeout_s": 300},
                        "mock": {"kind": "vllm", "base_urls": [f"http://127.0.0.1:{mock_port}/v1"], "timeout_s": 10}},
            "models": {self.model: {"routes": [{"target": "engine", "model": self.model}]},
                       "mock-model": {"routes": [{"target": "mock", "model": "mock-model"}]}}}, indent=1))
        self.key = self._create_key()
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.serve = start([*self.tuneloop, "serve", "--config", str(self.cfg), "--host", "127.0.0.1",
                            "--port", str(self.port)], self.tmp / "serve.log", self.env)
        say(f"[setup] tuneloop serve on {self.root} (pid {self.serve.pid}), waiting for /health/ready")
        say(f"[setup] ready after {wait_ready(self.root, self.serve, 300):.0f} s")

    def _create_key(self) -> str:
        p = subprocess.run([*self.tuneloop, "keys", "create", "--project", "chaos", "--name", "chaos",
                            "--rpm", "100000", "--config", str(self.cfg)],
                           capture_output=True, text=True, timeout=120, env=self.env)
        if p.returncode != 0:
            raise RuntimeError(f"keys create failed: {p.stdout[-500:]} {p.stderr[-1500:]}")
        return p.stdout.strip().splitlines()[-1].strip()

    def cleanup(self) -> None:
        kill_group(self.serve, grace=45)  # drains, flushes the log, stops the engine
        kill_group(self.mock)
        kill_group(self.redis.proc if self.redis else None)
        if self.tmpfs_error is None:
            subprocess.run(["umount", "-l", str(self.spool)], capture_output=True, timeout=30)
        if self.pg is not None:
            self.pg.cleanup(self.keep_tmp)
        if self.keep_tmp:
            say(f"[cleanup] kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def say(line: str) -> None:
    print(line, flush=True)


# ------------------------------------------------------------------ the faults


class Case:
    """One case: its times (s since the load began), what was done and seen, the log's answer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.start = self.fault_start = self.fault_end = self.end = 0.0
        self.notes: list[str] = []
        self.skipped: str | None = None
        self.m_before = self.m_after = None
        self.kill_t: float | None = None
        self.open_at_kill: list[Any] = []
        self.writer_pid: int | None = None
        self.checked: set[str] = set()  # the completion ids looked for in the log
        self.found: dict[str, tuple[int, bool]] = {}  # id -> (status, error set) in interactions
        self.ready_after: float | None = None


def redis_policy() -> str:
    """What the gateway is configured to do while Redis is away, if it has such a setting."""
    for where, fields in (("config", GatewayConfig.model_fields), ("settings", Settings.model_fields)):
        for name in ("redis_failure", "redis_failure_mode"):
            if name in fields:
                return f"{where} `{name}` left at its default {fields[name].default!r}"
    return "no `redis_failure` setting in gateway.config/settings yet: built-in behaviour"


async def inject(env: Env, load: Any, c: Case) -> None:
    """Start case ``c``'s fault (``load``: chaos.Load, for the engine streams open at the kill)."""
    run = asyncio.to_thread
    if c.name == "disk_full":  # shrink first: remounting smaller fails once the spool is in use
        rm = await run(subprocess.run, ["mount", "-o", f"remount,size={SPOOL_SMALL}", str(env.spool)])
        size = await run(fill, env.spool, 4096)  # one page: the next spool file finds the disk full
        c.notes.append(f"spool tmpfs remounted size={SPOOL_SMALL} (rc {rm.returncode}), filler "
                       f"{size // 1024} KiB leaves {free_bytes(env.spool) // 1024} KiB free")
    if c.name in ("postgres", "disk_full"):
        await run(env.pg.stop, "fast")
        c.notes.append("pg_ctl stop -m fast")
    elif c.name == "redis":
        await run(env.redis.stop)
        c.notes.append(f"redis-server SIGTERM; policy: {redis_policy()}")
    elif c.name == "engine":
        for _ in range(100):  # up to 10 s for an engine stream to be open
            if load.open:
                break
            await asyncio.sleep(0.1)
        pid = engine_child(env.serve.pid)
        c.open_at_kill, c.kill_t = list(load.open.values()), load.now()
        c.notes.append(f"SIGKILL engine child {pid}: {signal_pid(pid, signal.SIGKILL)}, "
                       f"{len(c.open_at_kill)} engine stream(s) open")
    elif c.name == "writer":
        c.writer_pid = writer_child(env.serve.pid)
        stall = os.environ.get("TUNELOOP_LOG_WRITER_STALL_S") or getattr(relay, "STALL_S", "?")
        c.notes.append(f"SIGSTOP log writer child {c.writer_pid}: {signal_pid(c.writer_pid, signal.SIGSTOP)} "
                       f"(the relay's watchdog replaces a child silent for {stall} s)")


async def heal(env: Env, load: Any, c: Case) -> None:
    """End case ``c``'s fault."""
    if c.name in ("postgres", "disk_full"):
        await asyncio.to_thread(env.pg.start)
        c.notes.append("postgresql started")
    if c.name == "disk_full":
        c.notes.append(f"spool at fault end: {free_bytes(env.spool) // 1024} KiB free, "
                       f"{len(list(env.spool.glob('spool-*')))} spool file(s)")
        (env.spool / "filler.bin").unlink(missing_ok=True)
        await asyncio.to_thread(subprocess.run, ["mount", "-o", f"remount,size={SPOOL_BIG}", str(env.spool)])
    elif c.name == "redis":
        await asyncio.to_thread(env.redis.start)
        c.notes.append(f"redis-server restarted on :{env.redis.port}")
    elif c.name == "writer":
        old, now = c.writer_pid, writer_child(env.serve.pid)
        st = state(old) if old else "-"
        c.notes.append(f"after {load.now() - c.fault_start:.1f} s the stopped writer {old} is in state {st!r}; "
                       f"writer child now {now} ({'replaced' if now != old else 'same pid'})")
        if st not in ("-", "Z"):
            c.notes.append(f"SIGCONT {old}: {signal_pid(old, signal.SIGCONT)}")


def check_log(url: str, ids: list[str], quick: bool) -> dict[str, tuple[int, bool]]:
    """Poll until every id is in ``interactions`` or the number found stays still (bounded); then
    each found id's status and whether its ``error`` is set."""
    t0 = time.monotonic()
    rows: dict[str, tuple[int, bool]] = {}
    last, still = -1, t0
    while time.monotonic() - t0 < (30 if quick else 90):
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                rows = {r[0]: (r[1], r[2]) for r in conn.execute(
                    "SELECT id, status, error IS NOT NULL FROM interactions WHERE id = ANY(%s)", (ids,))}
        except psycopg.Error as exc:
            say(f"  [check] {exc!r}")
        if len(rows) == len(ids):
            break
        if len(rows) != last:
            last, still = len(rows), time.monotonic()
        elif time.monotonic() - still > (5 if quick else 10):
            break
        time.sleep(1)
    return rows


# ------------------------------------------------------------------ metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric(text: str | None, name: str) -> float | None:
    """The sum of every sample of ``name`` over its labels; None when the metric is absent."""
    if text is None:
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            total += float(m.group(3))
            seen = True
    return total if seen else None

