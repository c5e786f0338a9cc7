"""The embeddings worker: serves /v1/embeddings from its own process.

Not built yet (its own issue): the chat path's broker contracts, worker directory and engine
interface are what it will reuse.
"""
