"""POST /v1/responses (OpenAI's Responses API), as a raw ASGI endpoint: passed through or translated.

The request is read and checked here (``check_body``, the input items), the stored conversation of
``previous_response_id`` loaded (same project only: another project's id is a 404), and then it is
served on the routed path that chat completions use (``gateway.api.routed``), one of two ways:

- **Passed through** when every target the alias may reach (its routes, canary arms and fallbacks)
  serves the Responses API itself (a target's ``responses_api``: true by default for ``openai``,
  false for ``vllm``): ``gateway.api.responses_native`` sends the request as sent, with
  ``store: false`` and the whole conversation as ``input`` (the gateway holds the history; the
  upstream would not know its ids), and relays the Response or its events with the gateway's id.
- **Translated** otherwise (one request never mixes the two, whichever route serves it): the body
  becomes a chat completion request (``gateway.responses.translate``) served as one by
  ``gateway.api.responses_translated`` (the chat path's checks, routes and errors), whose reply hooks
  turn the chat completion, or each chat chunk as it arrives, into the Response or its events
  (``gateway.responses.events``).

Either way routing (aliases, canaries, fallbacks), auth, limits, metrics (``api="responses"``), cost
and the interaction log apply as for chat, and the logged interaction is an ordinary chat completion
(so ``tuneloop dataset build`` trains on it) whose id, the ``x-request-id`` header, links the response
to it. With ``store`` (true unless false, as OpenAI's) the Response and its input items are kept in
``gateway.store.responses``: handed to the log writer with the interaction records before the reply's
last bytes, never waited for (``gateway.api.responses_turn``); if it cannot even be queued the reply
says ``store: false``.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.api.responses_native import NativeResponses, serves_natively
from gateway.api.responses_translated import TranslatedResponses
from gateway.api.responses_turn import Turn, history
from gateway.asgi import Receive, Scope, Send, header, parse_json, read_body, send_error
from gateway.auth import ANONYMOUS, Authenticator
from gateway.errors import GatewayError
from gateway.responses import passthrough
from gateway.responses.items import input_items, to_messages
from gateway.responses.objects import bad, check_body, new_id
from gateway.responses.translate import to_chat
from gateway.router import Router


class ResponsesEndpoint:
    def __init__(self, translated: TranslatedResponses, native: NativeResponses, state: Any, auth: Authenticator,
                 max_body: int) -> None:
        self.translated = translated
        self.native = native
        self.state = state  # the app's state: .log (the LogService, opened by the lifespan)
        self.auth = auth
        self.max_body = max_body
        self._router: Router | None = None  # the router ``_natively`` was filled from (a reload replaces it)
        self._natively: dict[str, bool] = {}  # alias -> served natively, for the aliases it has

    def serves_natively(self, model: str) -> bool:
        router: Router = self.translated.router_ref.router
        if router is not self._router:
            self._router, self._natively = router, {}
        known = self._natively.get(model)
        if known is None:
            known = serves_natively(router, model)
            if model in router.aliases:  # not for any name a client sends
                self._natively[model] = known
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            principal = (await self.auth.principal(header(scope, b"authorization"))
                         if self.auth.required else ANONYMOUS)
            body = check_body(parse_json(await read_body(scope, receive, self.max_body)))
            native = self.serves_natively(body["model"])
            items = input_items(body.get("input"), passthrough=native)
            previous = body.get("previous_response_id")
            earlier = await history(self.state.log, previous, principal) if previous is not None else []
            messages = to_messages(earlier + items)
            if not messages:
                raise bad("Invalid 'input': empty array. Expected at least one item.", "input", "empty_array")
            if native:
                passthrough.check(body)
                upstream = passthrough.upstream_body(body, earlier)
            else:
                upstream = to_chat(body, messages)
        except GatewayError as exc:
            await send_error(send, exc)
            return
        alias = self.translated.router_ref.router.aliases.get(body["model"])
        turn = Turn(new_id("resp"), body, int(time.time()), items, principal, messages,
                    redact_pii=bool(alias and alias.cfg.redact_pii))
        endpoint = self.native if native else self.translated
        await endpoint.serve(scope, receive, send, principal, upstream, turn)
