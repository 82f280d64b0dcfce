"""``tuneloop serve``: the gateway under uvicorn, plus the embedded engine and the job runner as child processes.

The engine runs in its own process so inference never competes with the gateway's event
loop; it is started for every target marked ``embedded``, restarted with backoff if it exits on its
own (``supervisor.py``), and stopped when the gateway exits. The fine-tuning job runner
(``python -m adapters.training.runner``: the training side, reached through the jobs table,
never imported) starts the workers of the jobs the API queues; ``TUNELOOP_TRAINING_RUNNER=0``
leaves that to runners elsewhere. Workers outlive the gateway (they are detached).
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from gateway import embedded
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.http_timeouts import HTTP_PROTOCOL  # httptools, plus header/body read timeouts
from gateway.ratelimit import SHARED_LIMITS_ENV
from gateway.settings import Settings
from gateway.supervisor import EngineSupervisor

log = logging.getLogger("tuneloop.serve")


def start_engines(settings: Settings, config: GatewayConfig) -> list[EngineSupervisor]:
    """One supervised child per embedded target, on a socket bound here and with its own key
    (``embedded.py``): restarted with backoff if it exits (``supervisor.py``), gone when we are."""
    children = []
    adapters = settings.resolved_home() / "adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    roots = [str(Path(b.adapters_dir).expanduser()) for b in config.base_models.values() if b.adapters_dir]
    for name, (sock, key) in embedded.bind(settings, config).items():
        target = config.targets[name]
        cmd = [sys.executable, "-m", "gateway.cli", "engine", "--fd", str(sock.fileno()),
               "--parent-pid", str(os.getpid()), "--adapters", str(adapters),
               "--enable-auto-tool-choice", "--tool-call-parser", "hermes",  # tool_choice "auto", OpenAI's default
               "--enable-prompt-tokens-details"]  # cached prompt tokens: their price is the cached one
        cmd += [arg for root in roots for arg in ("--allowed-lora-roots", root)]
        env = {**os.environ, "TUNELOOP_HOME": str(settings.resolved_home()), "HF_HUB_OFFLINE": "1",
               "VLLM_API_KEY": key,  # not on the command line
               "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}  # promoting an adapter loads it (vLLM's switch)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the engine keeps its own metrics
        log.info("starting the embedded engine for target %r on %s", name, target.base_urls[0])
        children.append(EngineSupervisor(name, cmd, env, sock))
    return children


class _Server(uvicorn.Server):
    """uvicorn, but SIGTERM first turns readiness off, and the process then exits normally.

    uvicorn drains in-flight requests and streams (up to ``timeout_graceful_shutdown``), then
    runs the app's shutdown, which flushes the log. By default it then re-raises the signal,
    which would kill us before the embedded engine is stopped: we clear uvicorn's record of
    captured signals (a private attribute; checked against uvicorn 0.54) and exit with 0.
    ``timeout_graceful_shutdown`` is annotated ``int`` but is ``asyncio.wait_for``'s timeout:
    fractions of a second are honoured (hence the ``type: ignore`` where it is passed).
    """

    def __init__(self, config: uvicorn.Config, app_state: object) -> None:
        super().__init__(config)
        self.app_state = app_state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.app_state.draining = True  # type: ignore[attr-defined]
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


RUNNER_ENV = "TUNELOOP_TRAINING_RUNNER"  # 0: this gateway queues fine-tuning jobs, runners elsewhere run them


def start_runner(settings: Settings, config: GatewayConfig, resume: bool) -> subprocess.Popen[bytes] | None:
    """The training side's job runner as a child process, started by module name (the gateway
    never imports the training code): it starts a worker for each job the API queues and, with
    ``resume`` (the embedded default trains on this machine), first resumes the local jobs a
    restart cut off from their checkpoints. The database is migrated first, so the runner's
    first look finds the tables; if it is away, serving goes on and the runner retries."""
    if os.environ.get(RUNNER_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        log.info("%s is off: fine-tuning jobs wait in the queue for a runner elsewhere", RUNNER_ENV)
        return None
    from gateway.settings import database_url
    from gateway.store import db

    url = database_url(settings, config)
    engine = db.create_engine(url)
    try:
        db.upgrade(engine)
    except Exception as exc:  # the database may be away: serving must not depend on it
        log.warning("could not migrate the database before starting the job runner: %s", exc)
    finally:
        engine.dispose()
    env = {**os.environ, "TUNELOOP_HOME": str(settings.resolved_home().resolve()), "TUNELOOP_DATABASE_URL": url,
           "HF_HUB_OFFLINE": "1"}  # the URL in the environment: a password stays off the command line
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [sys.executable, "-m", "adapters.training.runner", "--parent", str(os.getpid())]
    cmd += ["--resume"] if resume else []
    return subprocess.Popen(cmd, env=env)


def worker_app() -> object:
    """The app of one worker process when ``workers > 1`` (settings come from the environment)."""
    from gateway.cli import load_settings

    settings, config = load_settings()
    embedded.attach(settings, config)  # the engines the parent started
    app = create_app(settings, config)
    gc.freeze()  # see run
    return app


def _run_workers(settings: Settings, redis_url: str | None) -> None:
    """Several worker processes on one port; metrics aggregated through files
    (Prometheus multiprocess mode), everything else shared through the database/Redis."""
    metrics_dir = settings.resolved_home() / f"prometheus-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ.update({"TUNELOOP_HOME": str(settings.resolved_home()), "TUNELOOP_HOST": settings.host,
                       "TUNELOOP_PORT": str(settings.port), "TUNELOOP_ENGINE_PORT": str(settings.engine_port)})
    if settings.config is not None:
        os.environ["TUNELOOP_CONFIG"] = str(settings.config)
    if not redis_url:  # one limit for all the workers, not one per worker (gateway.limits_sqlite)
        os.environ[SHARED_LIMITS_ENV] = str(settings.resolved_home() / "limits.sqlite")
    log.info("%d workers share per-key limits through %s", settings.workers,
             "Redis" if redis_url else os.environ[SHARED_LIMITS_ENV])
    try:
        uvicorn.run("gateway.serve:worker_app", factory=True, workers=settings.workers, host=settings.host,
                    port=settings.port, loop="uvloop", http=HTTP_PROTOCOL, access_log=False, lifespan="on",
                    timeout_graceful_shutdown=settings.drain_timeout_s,  # type: ignore[arg-type]  # see _Server
                    log_config=None)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def run(settings: Settings, config: GatewayConfig) -> None:
    children: list[EngineSupervisor | subprocess.Popen[bytes]] = list(start_engines(settings, config))
    runner = start_runner(settings, config, resume=bool(children))  # the embedded default trains here
    if runner is not None:
        children.append(runner)
    if settings.workers > 1:
        try:
            _run_workers(settings, settings.redis_url or config.redis_url)
        finally:
            _stop(children)
            embedded.forget(settings)
        return
    app = create_app(settings, config)
    try:
        server = _Server(uvicorn.Config(
            app, host=settings.host, port=settings.port, loop="uvloop", http=HTTP_PROTOCOL,
            access_log=False, lifespan="on",
            timeout_graceful_shutdown=settings.drain_timeout_s,  # type: ignore[arg-type]  # see _Server
            log_config=None), app.state)  # our JSON logging, secrets redacted
        # What start-up made (the modules, the app, its routes and config) lives as long as the process: out of
        # the collector's reach, so the full collections that a request's allocations trigger every so often
        # no longer walk it (5-7% of a request's CPU on the gateway benchmarks, measured).
        gc.freeze()
        server.run()
    finally:
        _stop(children)
        embedded.forget(settings)


def _stop(children: list[EngineSupervisor | subprocess.Popen[bytes]]) -> None:
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
