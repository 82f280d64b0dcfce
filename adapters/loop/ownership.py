"""Whose traffic and feedback may train an alias: the alias owner's choice.

The owner says it in the gateway YAML's model entry::

    models:
      support-bot:
        project: acme                      # the owner (default: "default")
        train_on_projects: [acme, acme-eu] # default: [the owner]
        routes: [...]

The loop (dataset, the new-feedback count that starts a cycle, canary and shadow
statistics) reads only interactions of those projects and feedback given by them (or
with no project: an admin's or the operator's), so another tenant calling the same alias
cannot steer what it is trained on or whether a candidate is promoted. The YAML's entry
wins over a copy in the database's routes (promotions copy the entry they change); an
alias only in the database uses its entry's fields, an unknown one the default project.
"""

from __future__ import annotations

from adapters.registry.workspace import Workspace
from gateway.auth import DEFAULT_PROJECT
from gateway.config import ModelConfig
from gateway.store.routes import RouteStore


def training_projects(ws: Workspace, alias: str) -> list[str]:
    model = ws.config.models.get(alias)
    if model is None:
        stored = RouteStore(ws.engine).get(alias)
        if stored is None:
            return [DEFAULT_PROJECT]
        model = ModelConfig.model_validate(stored[0])
    return model.training_projects()
