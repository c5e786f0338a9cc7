"""The rate limiter's cost per request: microseconds and Redis round trips.

Runs the limiter exactly as a web process does for each API request (admit: one script call;
at the end, release the lease and correct the token estimate: one pipelined round trip), against the local
Redis (database 14 unless --redis-url), and reports the median and p99 time per request and the
round trips counted on the connection.

    .venv/bin/python -m bench.rate_limits [--requests 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid

import redis

from api.rate_limits.limiter import Limits, RateLimiter, redis_keys

LIMITS = Limits(requests=10**9, tokens=10**12, concurrency=10**6)


class CountingConnection(redis.Connection):
    """Counts commands sent (a pipeline's commands go in one send: one round trip)."""

    round_trips = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.round_trips += 1
        return super().send_packed_command(command, check_health)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rate_limits", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--full-window", action="store_true",
                        help="never empty the window: a key with a limit of --requests per minute")
    args = parser.parse_args()

    pool = redis.ConnectionPool.from_url(args.redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    limiter = RateLimiter(client, window_seconds=60, lease_seconds=30)
    key = uuid.uuid4().hex
    for _ in range(200):  # warm up: scripts loaded, connection open
        limiter.admit(key, uuid.uuid4().hex, 100, LIMITS).finish(80)
    client.delete(*redis_keys(key))

    # The window holds up to `requests` entries per key: measure with the log as full as the
    # default limit allows (60 requests), the realistic case; --full-window keeps every entry.
    per_request_us: list[float] = []
    CountingConnection.round_trips = 0
    for index in range(args.requests):
        if index % 60 == 0 and not args.full_window:
            client.delete(*redis_keys(key))
        started = time.perf_counter()
        limiter.admit(key, uuid.uuid4().hex, 100, LIMITS).finish(80)  # as a request that ends
        per_request_us.append((time.perf_counter() - started) * 1e6)
    resets = 0 if args.full_window else -(-args.requests // 60)
    trips = (CountingConnection.round_trips - resets) / args.requests
    per_request_us.sort()
    result = {
        "requests": args.requests,
        "entries_in_window": "up to --requests" if args.full_window else "up to 60",
        "median_us": round(statistics.median(per_request_us), 1),
        "p99_us": round(per_request_us[int(len(per_request_us) * 0.99)], 1),
        "redis_round_trips_per_request": round(trips, 2),
        "load_average": os.getloadavg()[0],
    }
    print(f"limiter per request: median {result['median_us']} us, p99 {result['p99_us']} us, "
          f"{result['redis_round_trips_per_request']} Redis round trips (admit; release + correct)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
