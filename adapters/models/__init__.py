"""Base models the engine serves and the trainer trains on: any local Hugging Face checkpoint
of a supported family.

Modules: ``arch`` (which ``architectures`` are supported and what each one's forward needs:
biases, q/k norms, sliding windows, rope), ``hf`` (read a local checkpoint folder: config,
safetensors weights, tokenizer and chat template), ``generation`` (the model's
``generation_config.json`` as vLLM's ``--generation-config`` reads it).  ``catalog`` (the
gateway's ``base_models``) belongs to the trainer side.  Importing this package loads nothing
heavy.
"""
