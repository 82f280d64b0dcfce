"""A realistic interaction log of N rows for loadtests/console_bench.py, bulk-inserted into SQLite and PostgreSQL.

Rows spread evenly over the last 90 days, inserted oldest first (as the writer does). Five projects, five
models, adapters with a canary arm (support-v4, 10% of support-bot) and a retired one (support-v1: the oldest
2% only), ~4% failures (502, 429, 500; no reply), ~3% shadow calls, metadata dicts (team, tier, session),
request and reply texts of 0.5-2 KB each; each request names an order ``ORD-<row number, 7 digits>``, so
searching one finds one row. Feedback on ~5%: ratings (up and down), a correction on a fifth of them.
Inserted with ``executemany`` (SQLite) and ``COPY`` (PostgreSQL) in batches of ``BATCH`` rows, straight into
the migrated schema (not through the gateway).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson

from gateway.store.schema import interactions

COLUMNS = tuple(c.name for c in interactions.columns)
FEEDBACK = ("id", "completion_id", "created", "project", "rating", "rating_raw", "rating_scale", "correction")
BATCH = 10_000
DAY_S = 86_400.0
SPAN_S = 90 * DAY_S
PROJECTS = (("acme", 40), ("globex", 25), ("initech", 15), ("umbrella", 12), ("hooli", 8))
MODELS = (("support-bot", 45), ("sales-bot", 20), ("gpt-4o-mini", 20), ("summarizer", 10), ("coder", 5))
UPSTREAM = {"sales-bot": ("local", "sales-v2"), "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18"),
            "summarizer": ("local", "llama-3.1-8b-instruct"), "coder": ("openai", "gpt-4.1")}
COMMON = "warranty"  # a word in ~10% of the requests (one sentence template)
SENTENCES = (
    "My order {order} arrived damaged and two of the {item} inside were broken.",
    "I would like a replacement rather than a refund, if that is possible.",
    "The tracking page for {order} has said 'in transit' for {n} days now.",
    "Can you change the delivery address to {city} before it ships?",
    "I was charged {amount} twice for the same {item}.",
    "Is the {item} covered by the " + COMMON + " if it cracks in the dishwasher?",
    "Please cancel my subscription at the end of this billing period.",
    "The discount code from your newsletter does not work at checkout.",
    "How long does a return take once the parcel reaches your warehouse in {city}?",
    "I never received the confirmation email for order {order}.",
    "Could you send me an invoice with my company's VAT number on it?",
    "The {item} I got is a different colour from the one in the photos.",
)
REPLIES = (
    "I'm sorry your order {order} arrived damaged; I've started a replacement for the {item}.",
    "You'll get a shipping confirmation by email within 24 hours, with a new tracking number.",
    "I've refunded the duplicate charge of {amount}; it shows on your statement in 3-5 business days.",
    "The delivery address is now {city}; the courier has the change.",
    "Your subscription stays active until the end of the period and will not renew.",
    "Returns are processed within {n} business days of reaching our warehouse.",
    "I've attached an invoice with your VAT number; you can also download it from your account.",
    "Thanks for your patience, and let me know if there is anything else I can help with.",
)
ITEMS = ("glasses", "mugs", "plates", "wine glasses", "carafes", "bowls", "tumblers", "teapots")
CITIES = ("Lyon", "Berlin", "Leeds", "Porto", "Austin", "Osaka", "Turin", "Gdansk", "Denver")
SYSTEM = "You are a helpful support agent for Acme Glassware. Answer briefly and politely; never promise refunds."


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


def _fill(rng: random.Random, template: str, order: str) -> str:
    return template.format(order=order, item=rng.choice(ITEMS), city=rng.choice(CITIES), n=rng.randint(2, 14),
                           amount=f"${rng.randint(5, 300)}.{rng.randint(0, 99):02d}")


def _text(rng: random.Random, pool: tuple[str, ...], order: str, k: int) -> str:
    return " ".join(_fill(rng, s, order) for s in rng.choices(pool, k=k))


def generate(n: int, now: float, seed: int = 16) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Batches of (interaction rows in ``COLUMNS`` order, feedback rows in ``FEEDBACK`` order), JSON as text."""
    rng = random.Random(seed)
    start, step = now - SPAN_S, SPAN_S / max(n, 1)
    rows: list[tuple[Any, ...]] = []
    fbs: list[tuple[Any, ...]] = []
    last_primary: tuple[str, str, str, str] | None = None
    for i in range(n):
        cid = f"chatcmpl-{rng.getrandbits(96):024x}"
        created = start + i * step
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        if last_primary is not None and rng.random() < 0.03:  # a shadow call of the previous request
            parent, project, model, _ = last_primary
            row.update(kind="shadow", parent_id=parent, project=project, requested_model=model,
                       target="local", upstream_model="support-v4", arm="shadow/support-v4")
        else:
            project, model = _pick(rng, PROJECTS), _pick(rng, MODELS)
            target, upstream = UPSTREAM.get(model, ("local", "support-v3"))
            if model == "support-bot" and rng.random() < 0.10:
                upstream = "support-v4"
            if model == "support-bot" and i < n * 0.02:
                upstream = "support-v1"  # retired: only in the oldest rows
            row.update(kind="primary", project=project, requested_model=model, target=target,
                       upstream_model=upstream, arm=f"{target}/{upstream}")
        order = f"ORD-{i:07d}"
        user = f"Order {order}. " + _text(rng, SENTENCES, order, rng.randint(2, 9))
        request = {"model": row["requested_model"], "messages": [{"role": "system", "content": SYSTEM},
                                                                 {"role": "user", "content": user}],
                   "temperature": 0.2, "user": f"customer-{rng.randint(1, 50_000)}"}
        metadata = {"team": f"t{rng.randint(0, 7)}", "tier": rng.choice(("free", "pro", "enterprise")),
                    "session": f"s-{i // 4:06d}"}
        roll = rng.random()
        status = 502 if roll < 0.02 else 429 if roll < 0.03 else 500 if roll < 0.04 else 200
        prompt_tokens, completion_tokens = len(user) // 4 + 30, rng.randint(40, 400)
        latency = rng.lognormvariate(-0.7, 0.5)
        response = None
        if status == 200:
            reply = _text(rng, REPLIES, order, rng.randint(2, 8))
            response = {"id": cid, "object": "chat.completion", "created": int(created), "model": row["upstream_model"],
                        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                     "message": {"role": "assistant", "content": reply, "refusal": None}}],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                  "total_tokens": prompt_tokens + completion_tokens}}
        row.update(id=cid, created=created, api_key_id=f"key-{row['project']}", upstream_base_url=None,
                   upstream_id=f"up-{i}", attempts=1 if status == 200 else rng.randint(1, 3),
                   stream=rng.random() < 0.4, store=True, request=orjson.dumps(request).decode(),
                   response=None if response is None else orjson.dumps(response).decode(),
                   finish_reason="stop" if response else None, status=status,
                   error=None if response else orjson.dumps({"message": "upstream failed", "status": status}).decode(),
                   prompt_tokens=prompt_tokens, completion_tokens=completion_tokens if response else None,
                   cached_tokens=0, total_tokens=prompt_tokens + (completion_tokens if response else 0),
                   ttft_s=latency * 0.2, latency_s=latency, object="chat.completion",
                   cost_usd=(prompt_tokens * 0.3 + completion_tokens * 1.2) / 1e6 if response else 0.0,
                   metadata=orjson.dumps(metadata).decode())
        rows.append(tuple(row[c] for c in COLUMNS))
        if row["kind"] == "primary":
            last_primary = (cid, row["project"], row["requested_model"], order)
            if status == 200 and rng.random() < 0.05:
                rating = rng.choice((1.0, 1.0, -1.0))
                correction = None
                if rng.random() < 0.2:
                    correction = orjson.dumps({"role": "assistant", "content": _text(rng, REPLIES, order, 2)}).decode()
                fbs.append((f"fb-{i:09d}", cid, created + 60, row["project"], rating, rating, "signed", correction))
        if len(rows) >= BATCH:
            yield rows, fbs
            rows, fbs = [], []
    if rows:
        yield rows, fbs


def fill(n: int, now: float, sqlite_path: str | None, pg_url: str | None) -> dict[str, float]:
    """Insert ``n`` rows into each database given (already migrated); returns seconds per database."""
    import sqlite3

    import psycopg

    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    fcols = ", ".join(FEEDBACK)
    spent = {"generate": 0.0, "sqlite": 0.0, "postgres": 0.0}
    lite = pg = None
    if sqlite_path:
        lite = sqlite3.connect(sqlite_path)
        lite.execute("PRAGMA synchronous=OFF")
    if pg_url:
        pg = psycopg.connect(pg_url)
    done, t0 = 0, time.perf_counter()
    mark = time.perf_counter()
    for rows, fbs in generate(n, now):
        spent["generate"] += time.perf_counter() - mark
        if lite is not None:
            mark = time.perf_counter()
            lite.executemany(f"INSERT INTO interactions ({cols}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
            lite.executemany(f"INSERT INTO feedback ({fcols}) VALUES ({', '.join('?' * len(FEEDBACK))})", fbs)
            lite.commit()
            spent["sqlite"] += time.perf_counter() - mark
        if pg is not None:
            mark = time.perf_counter()
            with pg.cursor() as cur:
                with cur.copy(f"COPY interactions ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                with cur.copy(f"COPY feedback ({fcols}) FROM STDIN") as copy:
                    for fb in fbs:
                        copy.write_row(fb)
            pg.commit()
            spent["postgres"] += time.perf_counter() - mark
        done += len(rows)
        if done % (BATCH * 10) == 0 or done == n:
            rate = done / (time.perf_counter() - t0)
            sys.stderr.write(f"\r  filled {done:,} / {n:,} rows ({rate:,.0f} rows/s)   ")
            sys.stderr.flush()
        mark = time.perf_counter()
    sys.stderr.write("\n")
    if lite is not None:
        lite.close()
    if pg is not None:
        mark = time.perf_counter()
        pg.autocommit = True
        pg.execute("VACUUM ANALYZE interactions")  # what autovacuum does within a minute of a bulk load
        pg.execute("VACUUM ANALYZE feedback")
        pg.close()
        spent["postgres"] += time.perf_counter() - mark
    return spent
