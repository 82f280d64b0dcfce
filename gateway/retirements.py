"""OpenAI's announced retirements of the base models that ``ft:`` fine-tunes are built on.

OpenAI stops new fine-tuning jobs on these families on ``FINE_TUNING_ENDS`` and shuts the
families down, their dated snapshots and every fine-tune of them included, on the date in
``SHUTDOWN``. ``GET /v1/models`` reports it as ``shutdown_date`` on the aliases whose routes
go to such an ``ft:`` model, and ``tuneloop migrate`` names it in its report.

An ``ft:`` model's name is ``ft:<base>:<org>[:<suffix>]:<id>``; ``<base>`` is a family
(``gpt-4o-mini``) or one of its dated snapshots (``gpt-4o-mini-2024-07-18``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

FINE_TUNING_ENDS = date(2027, 1, 6)
SHUTDOWN: dict[str, date] = {
    family: date(2027, 1, 14)
    for family in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano")
}
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def family(base: str) -> str:
    """``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini`` (a name without a date is its own family)."""
    return _SNAPSHOT.sub("", base)


def shutdown_date(model: str) -> date | None:
    """When OpenAI shuts ``model`` down, if it is an ``ft:`` model of a retiring family."""
    if not model.startswith("ft:"):
        return None
    return SHUTDOWN.get(family(model.split(":")[1]))


def earliest_shutdown(models: Iterable[str]) -> date | None:
    """The first shutdown among ``models`` (an alias's routes), or None when none retires."""
    dates = [d for d in map(shutdown_date, models) if d is not None]
    return min(dates) if dates else None
