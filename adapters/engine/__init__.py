"""The embedded inference engine: SmolLM2-135M-Instruct with many LoRA adapters on CPU (or CUDA),
continuous batching, and vLLM's OpenAI-compatible HTTP contract.

Modules: ``model`` (load and cache the base model), ``forward`` (batched Llama
forward with a row KV cache), ``lora`` (adapter registry, LRU, batched LoRA),
``sampling``, ``sequence``, ``scheduler`` (continuous batching thread),
``engine`` (facade), ``protocol`` (wire types), ``server`` (FastAPI app,
``run_engine``), ``metrics``.  Importing this package loads nothing heavy.
"""
