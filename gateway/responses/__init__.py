"""The Responses API on the chat path: ``translate`` (the one table of the mapping), ``items``
(input items normalised, items as chat messages), ``events`` (chat chunks as Responses stream events).
The endpoint is ``gateway.api.responses``; stored responses are ``gateway.store.responses``."""
