"""TensorZero's gateway (Rust) for gateway_bench.py, from the `tensorzero` Python wheel.

Run with the benchmark-only venv's Python, never the project's (its lock file pins that one):

    python3.11 -m venv /tmp/tensorzero-venv && /tmp/tensorzero-venv/bin/pip install tensorzero==2026.6.0
    /tmp/tensorzero-venv/bin/python loadtests/tensorzero_gateway.py --mock-port 18001 --config-dir /tmp/x

The wheel carries the Rust gateway and starts its HTTP server in this process
(``tensorzero._start_http_gateway``, what ``patch_openai_client`` uses) on a loopback port of
its choosing. This writes a config with two models that go to the mock upstream, starts the
gateway, prints ``TENSORZERO_URL http://127.0.0.1:PORT`` on one line, then blocks until killed
(SIGTERM closes the gateway). ``bench_system`` is what gateway_bench.py needs to run it.

Setup: models ``bench-model`` / ``bench-model-paced``, each one provider of type ``openai`` with
``api_base`` = the mock's ``/v1`` and ``model_name`` ``mock-model`` / ``mock-paced``,
``api_key_location = "none"`` (no real key). Observability off: no ClickHouse, Postgres or
Valkey URL (the ``TENSORZERO_*_URL`` variables are dropped too) and
``gateway.observability.enabled = false``, so TensorZero stores no inference in this setup;
it writes no line per request either (only warnings and errors, to stdout).
Clients call its OpenAI-compatible endpoint, ``POST /openai/v1/chat/completions`` with
``model: "tensorzero::model_name::bench-model"``.

Seen with 2026.6.0 (strace, and a raw socket): the gateway sets no TCP_NODELAY on the sockets
it accepts. A stream's headers and first event go out at once; with Nagle on, the later writes
wait until that segment is acknowledged, which on a reused (keep-alive) connection is the
client's delayed ACK (~40 ms on Linux), then arrive in one burst. Time to first token is not
affected; a stream's total time is (stream req/s at c16 is capped near 16 / 44 ms, so its c16
TTFT is measured at a lighter load than the others'), and so is the spacing of paced chunks.
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import sys
import urllib.parse

PATH = "/openai/v1/chat/completions"
MODEL_PREFIX = "tensorzero::model_name::"
MODELS = {"bench-model": "mock-model", "bench-model-paced": "mock-paced"}
URL_LINE = "TENSORZERO_URL "
DEFAULT_PYTHON = "/tmp/tensorzero-venv/bin/python"
INSTALL = ("python3.11 -m venv /tmp/tensorzero-venv && "
           "/tmp/tensorzero-venv/bin/pip install tensorzero==2026.6.0")
# read from the environment by the embedded gateway; none may turn storage on here
STORAGE_ENV = ("TENSORZERO_CLICKHOUSE_URL", "TENSORZERO_POSTGRES_URL", "TENSORZERO_VALKEY_URL",
               "TENSORZERO_VALKEY_CACHE_URL")


def bench_system(python: str, mock_port: int, tmp: str) -> dict:
    """gateway_bench.System fields: start command, models, path, how the URL is announced."""
    venv = os.path.dirname(os.path.dirname(python))
    dist = glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "tensorzero-*.dist-info"))
    version = os.path.basename(dist[0])[len("tensorzero-"):-len(".dist-info")] if dist else "?"
    return {
        "model": MODEL_PREFIX + "bench-model", "paced_model": MODEL_PREFIX + "bench-model-paced",
        "path": PATH, "url_line": URL_LINE,
        "skip": "" if os.path.exists(python) else f"{python} not found ({INSTALL})",
        "cmd": [python, os.path.abspath(__file__), "--mock-port", str(mock_port),
                "--config-dir", os.path.join(tmp, "tensorzero")],
        "env": {"TENSORZERO_DISABLE_PSEUDONYMOUS_USAGE_ANALYTICS": "1"},
        "note": (f"TensorZero {version}, the Rust gateway embedded by its Python wheel "
                 "(loadtests/tensorzero_gateway.py), one process; OpenAI-compatible endpoint "
                 f"`{PATH}`, model `{MODEL_PREFIX}bench-model`; observability off (no ClickHouse "
                 "or Postgres, `gateway.observability.enabled = false`): it stores no "
                 "inference, where tuneloop logs every one"),
    }


def config_toml(mock_port: int) -> str:
    out = ["[gateway]", "observability.enabled = false", ""]
    for name, upstream in MODELS.items():
        out += [f"[models.{name}]", 'routing = ["mock"]', "",
                f"[models.{name}.providers.mock]", 'type = "openai"',
                f'api_base = "http://127.0.0.1:{mock_port}/v1"',
                f'model_name = "{upstream}"', 'api_key_location = "none"', ""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mock-port", type=int, required=True)
    ap.add_argument("--config-dir", required=True, help="where tensorzero.toml is written")
    args = ap.parse_args()

    import tensorzero  # here: gateway_bench.py imports this module without it

    for k in STORAGE_ENV:
        os.environ.pop(k, None)

    os.makedirs(args.config_dir, exist_ok=True)
    cfg = os.path.join(args.config_dir, "tensorzero.toml")
    with open(cfg, "w") as f:
        f.write(config_toml(args.mock_port))
    gw = tensorzero._start_http_gateway(config_file=cfg, clickhouse_url=None, postgres_url=None,
                                        valkey_url=None, async_setup=False)
    u = urllib.parse.urlsplit(str(gw.base_url))  # http://127.0.0.1:PORT/openai/v1/
    print(f"{URL_LINE}{u.scheme}://{u.netloc}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            signal.pause()
    finally:
        gw.close()


if __name__ == "__main__":
    sys.exit(main())
