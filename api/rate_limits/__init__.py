"""Per-key rate limits: requests and tokens per sliding window, and concurrent requests, in Redis."""
