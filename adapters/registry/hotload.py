"""Hot-loading lives in the gateway (``gateway.hotload``), where the console's promotion reaches it too."""

from gateway.hotload import HotLoadError, load_into_target

__all__ = ["HotLoadError", "load_into_target"]
