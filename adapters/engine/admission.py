"""What the scheduler may admit: a fixed KV budget checked at the worst case, and fair queueing across tenants.

**KV budget** (``--kv-cache-memory-bytes``, vLLM's flag; default min(4 GiB, 25 % of the machine's memory or
of the GPU's)).  The KV cache is a rectangle, ``rows x capacity`` positions (``forward.KVCache``), so a
request is admitted only if every running row and each of the new request's ``n`` rows fit at the longest
worst case among them: ``rows x round(max(prompt + max_tokens)) x bytes_per_position <= usable``.  A
request without ``max_tokens`` may generate up to the context length (vLLM's default), or what its ``n``
rows can hold in the budget if that is less, and reserves that.  ``usable`` is the budget
less one layer's share (``budget x L / (L + 1)``): the cache re-lays out one layer at a time when it grows,
so it holds at most ``usable`` plus one layer, and so never more than the budget.  The engine's context
length is capped at what one row can hold (vLLM also refuses a ``max_model_len`` the KV cache cannot hold),
and a request that could not fit even alone is a 400 before it is queued.  The prefix cache has its own
bound (positions, ``prefix.py``), reported beside the budget at start.

**Fair queueing** (``--scheduling-policy fair``, the default; ``fcfs`` is the old single FIFO).  Waiting
requests are grouped by tenant (the ``x-tuneloop-tenant`` header, else the body's ``user``, else one shared
tenant) and admitted round-robin, one request per tenant per turn, so one tenant's 500 queued streams delay
another tenant's request by about one admission, not 500.  A tenant also may not hold more than
``max_running_per_tenant`` running rows (default ``max_batch // 2``) while another tenant is waiting; alone,
it may fill the batch.  A tenant with nothing running is always allowed one request, so ``n`` above the
cap still runs.  Within a tenant, order is FIFO, except that a request whose adapter does not fit the
batch's ``max_loras`` lets that tenant's later ones pass.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

from adapters.engine.forward import ROUND

if TYPE_CHECKING:
    import torch

    from adapters.engine.scheduler import Request

DEFAULT_MAX_KV_BYTES = 4 << 30
SHARED_TENANT = ""
MAX_TENANT_CHARS = 256
Verdict = Literal["admit", "skip", "stop"]


def round_up(n: int) -> int:
    return -(-n // ROUND) * ROUND


def default_kv_bytes(device: torch.device) -> int:
    """min(4 GiB, 25 % of the memory the cache lives in)."""
    if device.type == "cuda":
        import torch

        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(DEFAULT_MAX_KV_BYTES, total // 4)


def parse_bytes(text: str | int) -> int:
    """``4294967296``, ``4GiB``, ``512MiB``, ``4G`` or ``4GB`` (decimal) -> bytes."""
    if isinstance(text, int):
        return text
    t = str(text).strip().lower().removesuffix("b")
    units = {"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40, "k": 10**3, "m": 10**6, "g": 10**9,
             "t": 10**12}
    for suffix, mult in units.items():
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(t)


class KVBudget:
    def __init__(self, limit_bytes: int, bytes_per_position: int, n_layers: int, model_max_len: int):
        self.limit_bytes = limit_bytes
        self.bpp = bytes_per_position
        self.usable = limit_bytes * n_layers // (n_layers + 1)
        self.positions = self.usable // self.bpp  # every row together
        self.max_model_len = min(model_max_len, self.positions // ROUND * ROUND)
        if self.max_model_len < ROUND:
            raise ValueError(f"--kv-cache-memory-bytes {limit_bytes} holds {self.positions} positions "
                             f"({self.bpp} B each); at least {ROUND} are needed")

    def worst(self, prompt_len: int, max_tokens: int) -> int:
        """Positions one row of a request may occupy, rounded as the cache rounds them."""
        return round_up(min(prompt_len + max_tokens, self.max_model_len))

    def default_max_tokens(self, prompt_len: int, n: int) -> int:
        """``max_tokens`` for a request that leaves it out: up to the context (vLLM), and what its ``n`` rows
        can hold in the budget, so that leaving it out never makes a request too big to admit."""
        room = min(self.max_model_len, self.positions // max(1, n) // ROUND * ROUND)
        return max(1, room - prompt_len)

    def fits(self, rows: int, span: int) -> bool:
        return rows * span <= self.positions

    def refusal(self, n: int, prompt_len: int, max_tokens: int) -> str | None:
        """Why a request can never be admitted, even on an idle engine (None when it can)."""
        span = self.worst(prompt_len, max_tokens)
        if self.fits(n, span):
            return None
        return (f"This request needs up to {n * span * self.bpp} bytes of KV cache (n={n} x {span} positions of "
                f"prompt and max_tokens x {self.bpp} bytes), more than the engine's KV-cache budget of "
                f"{self.usable} bytes (--kv-cache-memory-bytes). Please reduce n, max_tokens or the length of "
                "the messages.")


def tenant_of(header: str | None, user: str | None) -> str:
    """The fair-queueing key: the gateway's ``x-tuneloop-tenant`` header, else the body's ``user``."""
    key = header or user or SHARED_TENANT
    return key[:MAX_TENANT_CHARS]


class FairQueue:
    """Waiting requests, per tenant, admitted round-robin (or one FIFO with ``fair=False``)."""

    def __init__(self, fair: bool = True, max_running_per_tenant: int | None = None):
        self.fair = fair
        self.cap = max_running_per_tenant
        self.queues: OrderedDict[str, deque[Request]] = OrderedDict()  # first key: whose turn it is

    def _key(self, req: Request) -> str:
        return req.tenant if self.fair else SHARED_TENANT

    def append(self, req: Request) -> None:
        self.queues.setdefault(self._key(req), deque()).append(req)

    def remove(self, req: Request) -> bool:
        q = self.queues.get(self._key(req))
        if q is None or req not in q:
            return False
        q.remove(req)
        if not q:
            del self.queues[self._key(req)]
        return True

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def __bool__(self) -> bool:
        return bool(self.queues)

    def __iter__(self) -> Iterator[Request]:
        for q in list(self.queues.values()):
            yield from list(q)

    def select(self, try_admit: Callable[[Request], Verdict], running: dict[str, int]) -> None:
        """Offer requests to ``try_admit`` in fair order until it says ``stop`` or nothing more can go.

        ``running`` is rows running per tenant (updated here as requests are admitted).  A tenant whose head
        request is refused with ``stop`` keeps its turn for the next step.
        """
        progress = True
        while progress and self.queues:
            progress = False
            for tenant in list(self.queues):
                if tenant not in self.queues or self._capped(tenant, running):
                    continue
                verdict, req = self._offer(tenant, try_admit)
                if verdict == "stop":
                    return
                if req is not None:
                    running[tenant] = running.get(tenant, 0) + req.params.n
                    if tenant in self.queues:
                        self.queues.move_to_end(tenant)
                    progress = True

    def _capped(self, tenant: str, running: dict[str, int]) -> bool:
        if not self.fair or self.cap is None or len(self.queues) < 2:
            return False
        held = running.get(tenant, 0)
        return held > 0 and held >= self.cap

    def _offer(self, tenant: str, try_admit: Callable[[Request], Verdict]) -> tuple[Verdict, Request | None]:
        """The tenant's first request that ``try_admit`` takes (removed from the queue)."""
        q = self.queues[tenant]
        for req in list(q):
            verdict = try_admit(req)
            if verdict == "stop":
                return "stop", None
            if verdict == "admit":
                self.remove(req)
                return "admit", req
        return "skip", None
