"""Publishing jobs from gevent greenlets: bounded connections, confirms, bounded waiting."""

from __future__ import annotations

import socket
import threading
import uuid

import pika
import pytest


def queue_depth(broker_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        return connection.channel().queue_declare(queue=queue, passive=True).method.message_count
    finally:
        connection.close()


def delete_queues(broker_url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
    finally:
        connection.close()


def test_many_greenlets_share_a_small_pool_and_every_job_is_confirmed(run_under_gevent, broker_url):
    queue = f"llamagate.test.{uuid.uuid4().hex[:8]}"
    try:
        result = run_under_gevent("""
            import gevent
            from broker.publisher import PooledRabbitmqBroker
            from broker.rabbitmq import build_job_message

            broker = PooledRabbitmqBroker(url=url, pool_size=3, enqueue_timeout=5.0)
            most_open = 0

            def publish(i):
                global most_open
                broker.enqueue(build_job_message(queue, "actor", {"i": i}, max_age_ms=60000))
                most_open = max(most_open, broker.open_connections())

            gevent.joinall([gevent.spawn(publish, i) for i in range(200)], raise_error=True)
            print(json.dumps({"most_open": most_open, "open_after": broker.open_connections()}))
        """, url=broker_url, queue=queue)

        # dramatiq's stock broker would have opened one connection per greenlet: 200.
        assert 1 <= result["most_open"] <= 3
        assert queue_depth(broker_url, queue) == 200
    finally:
        delete_queues(broker_url, queue)


def test_unreachable_rabbitmq_fails_fast_with_enqueue_error(run_under_gevent):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens once the socket is closed
    result = run_under_gevent("""
        from broker.publisher import PooledRabbitmqBroker
        from broker.rabbitmq import EnqueueError, build_job_message

        broker = PooledRabbitmqBroker(url=url, pool_size=2, enqueue_timeout=2.0)
        started = time.monotonic()
        try:
            broker.enqueue(build_job_message("q", "actor", {}, max_age_ms=1000))
            outcome = "published"
        except EnqueueError as exc:
            outcome = "EnqueueError"
        print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}))
    """, url=f"amqp://guest:guest@127.0.0.1:{closed_port}/%2F")

    assert result["outcome"] == "EnqueueError"
    assert result["seconds"] < 3.0


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never speaks AMQP (like a hung broker)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_broker_times_out_within_the_enqueue_timeout(run_under_gevent, silent_server):
    result = run_under_gevent("""
        from broker.publisher import PooledRabbitmqBroker
        from broker.rabbitmq import EnqueueError, build_job_message

        broker = PooledRabbitmqBroker(url=url, pool_size=2, enqueue_timeout=1.0)
        started = time.monotonic()
        try:
            broker.enqueue(build_job_message("q", "actor", {}, max_age_ms=1000))
            outcome = "published"
        except EnqueueError:
            outcome = "EnqueueError"
        print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}))
    """, url=f"amqp://guest:guest@127.0.0.1:{silent_server}/%2F?connection_attempts=1&socket_timeout=30")

    assert result["outcome"] == "EnqueueError"
    assert 0.9 <= result["seconds"] < 2.5
