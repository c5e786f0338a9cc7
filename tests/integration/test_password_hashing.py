"""In a gevent web process, password hashing must not stop the process's other greenlets."""

from __future__ import annotations


def test_hashing_runs_beside_other_greenlets(run_under_gevent):
    result = run_under_gevent("""
        import gevent
        from api.accounts.passwords import hash_password, verify_password

        ticks = []
        def ticker():
            while True:
                ticks.append(time.monotonic())
                gevent.sleep(0.002)

        runner = gevent.spawn(ticker)
        gevent.sleep(0.01)
        started = time.monotonic()
        hashed = hash_password("correct horse battery staple")
        ok = verify_password(hashed, "correct horse battery staple")
        elapsed = time.monotonic() - started
        during = [t for t in ticks if t >= started]
        runner.kill()
        gaps = [b - a for a, b in zip(during, during[1:])]
        print(json.dumps({"ok": ok, "elapsed": elapsed, "ticks": len(during), "max_gap": max(gaps or [elapsed])}))
    """)
    assert result["ok"]
    # Without the thread pool the ticker would stall for the whole hash (tens of ms or more).
    assert result["max_gap"] < max(0.5 * result["elapsed"], 0.02), result
