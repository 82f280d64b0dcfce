"""The Responses API, translated or passed through: ``translate`` (the one table of the mapping, both
ways), ``items`` (input items normalised, items as chat messages), ``events`` (chat chunks as Responses
stream events), ``objects`` (ids, the Response object), ``passthrough`` (what a target that serves the
Responses API gets, and how its reply is shown and followed). The endpoints are ``gateway.api.responses``
and ``gateway.api.responses_native``; stored responses are ``gateway.store.responses``."""
