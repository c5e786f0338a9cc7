"""Token events from a worker's EventPublisher to the right waiting request, through real Redis pub/sub."""

from __future__ import annotations


def test_events_reach_their_request_in_order(run_under_gevent, redis_url):
    result = run_under_gevent("""
        import redis
        from broker.contracts import EventKind, JobEvent
        from broker.event_publisher import EventPublisher
        from broker.event_router import EventRouter

        router = EventRouter(url, "routertest1")
        router.start()
        assert router.wait_subscribed(5)
        first, second = router.register("req-a"), router.register("req-b")
        publisher = EventPublisher(redis.Redis.from_url(url))
        channel = router.channel
        step1 = [JobEvent("req-a", EventKind.DELTA, 0, text="Hel"), JobEvent("req-b", EventKind.DELTA, 0, text="X"),
                 JobEvent("req-gone", EventKind.DELTA, 0, text="nobody")]
        step2 = [JobEvent("req-a", EventKind.DELTA, 1, text="lo")]
        unheard = publisher.publish(step1, {"req-a": channel, "req-b": channel, "req-gone": channel},
                                    {"req-a"}).unheard
        publisher.publish(step2, {"req-a": channel})
        got_a = [first.get(timeout=5).text, first.get(timeout=5).text]
        got_b = [second.get(timeout=5).text]
        emitted = redis.Redis.from_url(url).exists("llg:job:req-a:emitted")
        print(json.dumps({"a": got_a, "b": got_b, "unheard": sorted(unheard), "emitted": emitted,
                          "b_empty": second.empty()}))
    """, url=redis_url)

    assert result["a"] == ["Hel", "lo"]
    assert result["b"] == ["X"]
    assert result["b_empty"]
    assert result["unheard"] == []  # the channel has a subscriber, even if one request is unknown to it
    assert result["emitted"] == 1


def test_publishing_to_a_channel_nobody_listens_to_reports_the_requests(redis_client):
    from broker.contracts import EventKind, JobEvent
    from broker.event_publisher import EventPublisher

    unheard = EventPublisher(redis_client).publish([JobEvent("req-x", EventKind.DELTA, 0, text="t")],
                                                   {"req-x": "llg:events:no-such-process"}).unheard

    assert unheard == {"req-x"}


def test_a_broken_subscription_fails_waiting_requests_and_recovers(run_under_gevent, redis_url):
    result = run_under_gevent("""
        import gevent, redis
        from broker.contracts import EventKind, JobEvent
        from broker.event_publisher import EventPublisher
        from broker.event_router import EventRouter, TRANSPORT_LOST

        router = EventRouter(url, "routertest2")
        router.start()
        assert router.wait_subscribed(5)
        waiting = router.register("req-1")
        admin = redis.Redis.from_url(url)
        mine = [c for c in admin.client_list() if c.get("name") == "llamagate-events-routertest2"]
        admin.client_kill_filter(_id=mine[0]["id"])
        lost = waiting.get(timeout=5) is TRANSPORT_LOST
        gevent.sleep(0.5)
        resubscribed = router.wait_subscribed(10)
        after = router.register("req-2")
        EventPublisher(admin).publish([JobEvent("req-2", EventKind.DELTA, 0, text="ok")], {"req-2": router.channel})
        print(json.dumps({"lost": lost, "resubscribed": resubscribed, "after": after.get(timeout=5).text}))
    """, url=redis_url)

    assert result == {"lost": True, "resubscribed": True, "after": "ok"}
