"""The embeddings worker: serves /v1/embeddings from its own process, batching inputs across requests."""
