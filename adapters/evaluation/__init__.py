"""Candidate vs live on held-out data: task checks, similarity to the reference, an optional judge."""
