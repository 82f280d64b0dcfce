"""vLLM's runtime-LoRA switch and its filesystem LoRA resolver.

* :func:`runtime_lora_updating`: ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` read as ``vllm/envs.py`` reads it
  (``1`` or ``true``, any case).  Off (the default), ``POST /v1/load_lora_adapter`` and
  ``/v1/unload_lora_adapter`` are not registered (404, as in vLLM) and no resolver runs.
  ``tuneloop serve`` turns it on for its engine, since promoting an adapter loads it there.
* :class:`FilesystemResolver` (``vllm/plugins/lora_resolvers/filesystem_resolver.py``): with
  ``VLLM_LORA_RESOLVER_CACHE_DIR=DIR`` (an existing folder, else the engine does not start, as vLLM's
  plugin refuses), ``VLLM_PLUGINS`` unset or naming ``lora_filesystem_resolver``, and runtime updating
  on, a request whose ``model`` is neither the base nor a loaded adapter loads ``DIR/<model>`` when that
  folder holds an ``adapter_config.json`` with ``peft_type`` LORA and ``base_model_name_or_path`` equal
  to the served base (vLLM compares its ``--model`` string; here also the folder the base was loaded
  from, which is what peft writes for the embedded model).  The adapter then stays loaded (listed in
  ``/v1/models``).  No such folder: the usual 404.  Found but refused by ``lora.py``'s rules: 400
  ``LoRA adapter 'X' was found but could not be loaded.`` (vLLM's words; the reason is logged).
  The load runs on the first request's event loop turn (a peft folder reads in milliseconds).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.engine.lora import AdapterError

if TYPE_CHECKING:
    from adapters.engine.engine import Engine

log = logging.getLogger(__name__)

RUNTIME_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
CACHE_DIR_ENV = "VLLM_LORA_RESOLVER_CACHE_DIR"
PLUGIN = "lora_filesystem_resolver"


def runtime_lora_updating(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get(RUNTIME_ENV, "0").strip().lower() in ("1", "true")


class FilesystemResolver:
    """Loads ``<cache_dir>/<name>`` into ``engine`` the first time a request names it."""

    def __init__(self, engine: Engine, cache_dir: Path, base_names: set[str]):
        self.engine, self.base_names = engine, base_names
        self.root = os.path.realpath(cache_dir)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, engine: Engine, model: str, model_path: Path,
                 environ: Mapping[str, str] | None = None) -> FilesystemResolver | None:
        """The resolver the environment asks for, or None; ``ValueError`` for a cache dir that is no folder."""
        env = os.environ if environ is None else environ
        cache = env.get(CACHE_DIR_ENV)
        plugins = env.get("VLLM_PLUGINS")
        if not cache or (plugins is not None and PLUGIN not in plugins.split(",")):
            return None
        if not Path(cache).is_dir():
            raise ValueError(f"{CACHE_DIR_ENV} must be set to a valid directory for Filesystem Resolver plugin "
                             f"to function (got {cache!r}).")
        if not runtime_lora_updating(env):
            log.warning("%s is set but %s is not: the LoRA resolver stays off, as in vLLM", CACHE_DIR_ENV,
                        RUNTIME_ENV)
            return None
        names = {model, str(model_path), os.path.realpath(model_path)}
        log.info("LoRA filesystem resolver on %s (adapters for base %s)", cache, model)
        return cls(engine, Path(cache), names)

    def path_for(self, name: str) -> Path | None:
        """``<cache_dir>/<name>`` when ``name`` stays inside the cache dir (no absolute path, no ``..`` out)."""
        try:
            if not name or os.path.isabs(name):
                return None
            path = os.path.realpath(os.path.join(self.root, name))
            if path == self.root or os.path.commonpath([self.root, path]) != self.root:
                return None
        except ValueError:  # a NUL byte, a path on another drive
            return None
        return Path(path)

    def _matches(self, path: Path) -> bool:
        try:
            cfg = json.loads((path / "adapter_config.json").read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
            return False
        base = cfg.get("base_model_name_or_path")
        return isinstance(base, str) and (base in self.base_names or os.path.realpath(base) in self.base_names)

    def resolve(self, name: str) -> bool:
        """True once ``name`` is loaded (by this call or an earlier one); False when no adapter is found.

        Raises the engine's 400 when an adapter is found but cannot be loaded."""
        path = self.path_for(name)
        if path is None or not self._matches(path):
            return False
        with self._lock:
            if name in self.engine.adapters:
                return True
            try:
                self.engine.add_adapter(name, path)
            except AdapterError as exc:
                from adapters.engine.engine import EngineError  # engine.py imports this module

                log.warning("LoRA adapter %r found in %s but not loaded: %s", name, path, exc)
                raise EngineError(f"LoRA adapter '{name}' was found but could not be loaded.", 400,
                                  param="model") from exc
        log.info("resolved and loaded LoRA adapter %r from %s", name, path)
        return True
