"""The console: web pages for the people in the loop, served by ``tuneloop serve`` at ``/ui/``.

Server-rendered (Jinja2 templates in ``templates/``), one stylesheet and one small script in
``static/``, all inside the package: no build step, and nothing is fetched from anywhere but this
gateway (its Content-Security-Policy says so to the browser). The pages read and write through the
same functions as the API: the log's reads in ``gateway.store.traffic`` (beside the stored-completions
queries), feedback through ``gateway.api.feedback.save_feedback`` (the code of ``POST /v1/feedback``).

- ``session``: sign-in with an API key, the session cookie, CSRF, who is looking (and at which project);
- ``pages``: the routes (sign-in and out, traffic, one interaction, feedback, an admin's project);
- ``views``: the rows as people read them (filters, conversation bubbles, numbers);
- ``render``: templates, static files and the headers every page carries.
- ``review``, ``costs``, ``admin``: the review queue, costs and latency (``charts``: its inline SVG), keys and
  projects;
"""

from gateway.console import (  # pages 3 to 7: a router each, included in pages'
    adapters,
    admin,
    costs,
    datasets,
    jobs,
    release,
    review,
)
from gateway.console.pages import router

for _module in (review, costs, admin, datasets, jobs, adapters, release):
    router.include_router(_module.router, prefix="")

__all__ = ["router"]
