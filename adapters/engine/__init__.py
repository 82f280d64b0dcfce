"""The inference engine: a local Hugging Face checkpoint of the Llama, Mistral, Qwen2 or Qwen3
families (``adapters.models``; SmolLM2-135M-Instruct embedded by default) with many LoRA adapters
on CPU (or CUDA), continuous batching, and vLLM's OpenAI-compatible HTTP contract and flags.

Modules: ``model`` (load and cache the base model), ``forward`` (batched Llama
forward with a row KV cache), ``lora`` (adapter registry, LRU, batched LoRA),
``sampling``, ``sequence``, ``scheduler`` (continuous batching thread),
``engine`` (facade), ``protocol`` (wire types), ``server`` (FastAPI app,
``run_engine``), ``metrics``.  Importing this package loads nothing heavy.
"""
