"""Training sets from the interaction log: SFT and DPO JSONL, filtered, scrubbed,
deduplicated, split, validated, and recorded with their source interactions.

One module per job: ``filters`` (CLI → query filters), ``scrub`` (PII), ``dedupe``,
``split``, ``sft`` / ``dpo`` (line shapes), ``build`` (the streaming pipeline),
``validate`` + ``tokens`` + ``report`` (format rules, token counts, cost), ``cli``.
"""
