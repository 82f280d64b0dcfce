"""promote() refuses a canary share outside (0, 100] before it touches anything (no lookup, no hot-load)."""

from __future__ import annotations

import pytest

from adapters.registry.promote import PromotionError, promote
from adapters.registry.workspace import open_workspace


@pytest.mark.parametrize("canary", [0, -5])
def test_canary_share_is_checked_first(tmp_path, canary):
    ws = open_workspace(home=tmp_path, database_url=f"sqlite:///{tmp_path}/t.db", gateway_url="http://127.0.0.1:9/v1")
    # the adapter does not exist either: the argument is what is reported, as nothing was looked up
    with pytest.raises(PromotionError, match="between 0 and 100"):
        promote(ws, "adapter-missing", "support-bot", canary=canary, wait=False)
