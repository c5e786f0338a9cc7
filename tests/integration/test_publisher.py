"""Publishing jobs from gevent greenlets: one connection, every job confirmed, bounded waiting."""

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


def declare(broker_url: str, queue: str) -> None:
    """Declare `queue` the way a dramatiq worker does (the web tier only publishes to it)."""
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=broker_url)
    broker.declare_queue(queue, ensure=True)
    broker.close()


def test_many_greenlets_share_one_connection_and_every_job_is_confirmed(run_under_gevent, broker_url):
    queue = f"llamagate.test.{uuid.uuid4().hex[:8]}"
    declare(broker_url, queue)
    try:
        result = run_under_gevent("""
            import gevent, gc, pika
            from broker.publisher import JobPublisher
            from broker.rabbitmq import build_job_message

            publisher = JobPublisher(url, enqueue_timeout=5.0)
            gevent.joinall([gevent.spawn(publisher.enqueue, build_job_message(queue, "actor", {"i": i}, 60000))
                            for i in range(200)], raise_error=True)
            connections = [o for o in gc.get_objects() if isinstance(o, pika.connection.Connection)]
            print(json.dumps({"connections": len(connections)}))
        """, url=broker_url, queue=queue)

        # dramatiq's stock broker would have opened one connection per greenlet: 200.
        assert result["connections"] == 1
        assert queue_depth(broker_url, queue) == 200
    finally:
        delete_queues(broker_url, queue)


def enqueue_once(run_under_gevent, url: str, queue: str, timeout: float) -> dict:
    """Publish one job from a fresh JobPublisher: its outcome, how long it took, whether still connected."""
    return run_under_gevent("""
        from broker.publisher import JobPublisher
        from broker.rabbitmq import EnqueueError, build_job_message

        publisher = JobPublisher(url, enqueue_timeout=enqueue_timeout)
        started = time.monotonic()
        try:
            publisher.enqueue(build_job_message(queue, "actor", {}, max_age_ms=1000))
            outcome = "published"
        except EnqueueError as exc:
            outcome = f"EnqueueError: {exc}"
        print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started,
                          "connected": publisher.connected}))
    """, url=url, queue=queue, enqueue_timeout=timeout)


def test_a_job_for_a_missing_queue_is_refused_not_lost(run_under_gevent, broker_url):
    result = enqueue_once(run_under_gevent, broker_url, "llamagate.test.no-such-queue", timeout=5.0)

    assert "no queue" in result["outcome"]
    assert result["connected"]


def test_publishing_resumes_after_the_connection_is_lost(run_under_gevent, broker_url):
    queue = f"llamagate.test.{uuid.uuid4().hex[:8]}"
    declare(broker_url, queue)
    try:
        result = run_under_gevent("""
            import gevent
            from broker.publisher import JobPublisher
            from broker.rabbitmq import build_job_message

            publisher = JobPublisher(url, enqueue_timeout=5.0)
            publisher.enqueue(build_job_message(queue, "actor", {"i": 1}, 60000))
            import socket
            publisher._connection._transport._sock.shutdown(socket.SHUT_RDWR)  # the connection drops
            gevent.sleep(0.5)
            publisher.enqueue(build_job_message(queue, "actor", {"i": 2}, 60000))
            print(json.dumps({"connected": publisher.connected}))
        """, url=broker_url, queue=queue)

        assert result["connected"]
        assert queue_depth(broker_url, queue) == 2
    finally:
        delete_queues(broker_url, queue)


def test_unreachable_rabbitmq_fails_fast_with_enqueue_error(run_under_gevent):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens once the socket is closed
    result = enqueue_once(run_under_gevent, f"amqp://guest:guest@127.0.0.1:{closed_port}/%2F", "q", timeout=2.0)

    assert result["outcome"].startswith("EnqueueError")
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
    url = f"amqp://guest:guest@127.0.0.1:{silent_server}/%2F?connection_attempts=1&socket_timeout=30"
    result = enqueue_once(run_under_gevent, url, "q", timeout=1.0)

    assert result["outcome"].startswith("EnqueueError")
    assert 0.9 <= result["seconds"] < 2.5
