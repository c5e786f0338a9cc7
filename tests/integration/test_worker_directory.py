"""Workers announce themselves with expiring keys; web processes see who is alive."""

from __future__ import annotations

import time

from broker.worker_directory import WorkerAnnouncer, WorkerDirectory, WorkerInfo


def make_info(worker_id: str, models=("model-a",)) -> WorkerInfo:
    return WorkerInfo(worker_id=worker_id, models=tuple(models), host="h", pid=1, engine="benchmark",
                      max_batch_size=4, started_at=time.time())


def test_an_announced_worker_is_listed_with_its_models(redis_client):
    announcer = WorkerAnnouncer(redis_client, make_info("w-listed", ("model-a", "model-b")), 0.1, 1.0,
                                is_healthy=lambda: True)
    announcer.announce()
    directory = WorkerDirectory(redis_client)
    directory.refresh()

    assert directory.is_alive("w-listed")
    assert {w.worker_id for w in directory.workers_for("model-b")} >= {"w-listed"}
    assert {"model-a", "model-b"} <= directory.served_models()
    announcer.withdraw()


def test_a_withdrawn_worker_disappears_at_once(redis_client):
    announcer = WorkerAnnouncer(redis_client, make_info("w-withdrawn"), 0.1, 30.0, is_healthy=lambda: True)
    announcer.announce()
    announcer.withdraw()
    directory = WorkerDirectory(redis_client)
    directory.refresh()

    assert not directory.is_alive("w-withdrawn")


def test_a_silent_worker_expires_after_its_ttl(redis_client):
    announcer = WorkerAnnouncer(redis_client, make_info("w-silent"), 0.1, 0.5, is_healthy=lambda: True)
    announcer.announce()
    directory = WorkerDirectory(redis_client)
    directory.refresh()
    assert directory.is_alive("w-silent")

    time.sleep(0.7)
    directory.refresh()
    assert not directory.is_alive("w-silent")


def test_a_worker_with_a_stuck_loop_stops_announcing(redis_client):
    healthy = {"value": True}
    announcer = WorkerAnnouncer(redis_client, make_info("w-stuck"), 0.1, 0.5, is_healthy=lambda: healthy["value"])
    announcer.start()
    directory = WorkerDirectory(redis_client)
    time.sleep(0.3)
    directory.refresh()
    assert directory.is_alive("w-stuck")

    healthy["value"] = False
    time.sleep(0.9)
    directory.refresh()
    assert not directory.is_alive("w-stuck")

    healthy["value"] = True
    time.sleep(0.3)
    directory.refresh()
    assert directory.is_alive("w-stuck")
    announcer.stop()
