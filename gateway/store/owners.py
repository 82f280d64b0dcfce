"""Conditions that keep a tenant's data out of another alias' training (the loop's ownership rule).

An alias' owner chooses whose traffic trains it (``models.<alias>.project`` and
``train_on_projects`` in the gateway YAML; see ``adapters.loop.ownership``). The queries
the loop reads (dataset export, new-feedback count, canary and shadow statistics) take
``projects`` and add these conditions: the interaction belongs to one of the projects,
and only feedback given by one of them counts, or feedback with no project (given with an
admin key, or by the operator with auth off).

Plain ``=`` comparisons OR-ed together rather than an expanding ``IN``: the dataset
export runs the compiled SQL on the DB-API cursor itself (``export.stream_batches``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from gateway.store.schema import feedback, interactions


def one_of(column: Any, values: Sequence[str]) -> sa.ColumnElement[bool]:
    return sa.or_(sa.false(), *(column == v for v in values))


def interactions_of(projects: Sequence[str] | None) -> tuple[sa.ColumnElement[bool], ...]:
    return () if projects is None else (one_of(interactions.c.project, projects),)


def feedback_of(projects: Sequence[str] | None) -> tuple[sa.ColumnElement[bool], ...]:
    if projects is None:
        return ()
    return (sa.or_(feedback.c.project.is_(None), one_of(feedback.c.project, projects)),)
