"""The website on Flask's test client: a real SQLite store, an in-memory stand-in for Redis."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from api.app import create_app
from api.store.db import Database, upgrade
from shared.registry import ModelRegistry
from shared.settings import Settings

PASSWORD = "correct horse battery staple"


class FakeRedis:
    """The few Redis commands the website uses, with expiry, in one process's memory."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[bytes, Optional[float]]] = {}

    def _live(self, key: str) -> Optional[bytes]:
        value, expires_at = self.values.get(key, (None, None))
        if expires_at is not None and expires_at <= time.time():
            self.values.pop(key, None)
            return None
        return value

    def get(self, key: str) -> Optional[bytes]:
        return self._live(key)

    def set(self, key: str, value: Any, ex: Optional[int] = None, nx: bool = False) -> bool:
        if nx and self._live(key) is not None:
            return False
        data = value if isinstance(value, bytes) else str(value).encode()
        self.values[key] = (data, time.time() + ex if ex else None)
        return True

    def delete(self, *keys: str) -> int:
        return sum(self.values.pop(key, None) is not None for key in keys)

    def incr(self, key: str) -> int:
        value = int(self._live(key) or 0) + 1
        self.values[key] = (str(value).encode(), self.values.get(key, (None, None))[1])
        return value

    def expire(self, key: str, seconds: int) -> bool:
        if self._live(key) is None:
            return False
        self.values[key] = (self.values[key][0], time.time() + seconds)
        return True

    def pipeline(self) -> "FakePipeline":
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, client: FakeRedis) -> None:
        self.client = client
        self.calls: list[tuple[str, tuple]] = []

    def __enter__(self) -> "FakePipeline":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.calls.clear()

    def incr(self, key: str) -> "FakePipeline":
        self.calls.append(("incr", (key,)))
        return self

    def expire(self, key: str, seconds: int) -> "FakePipeline":
        self.calls.append(("expire", (key, seconds)))
        return self

    def execute(self) -> list[Any]:
        return [getattr(self.client, name)(*args) for name, args in self.calls]


class FakeDirectory:
    """The worker directory, with a fixed set of served models."""

    def __init__(self, served: set[str]):
        self.served = served
        self.fresh = True

    def served_models(self) -> set[str]:
        return set(self.served)


@dataclass
class WebRuntime:
    """What the website reads off api.runtime.Runtime; nothing here opens a connection."""

    settings: Settings
    registry: ModelRegistry
    db: Database
    redis: FakeRedis = field(default_factory=FakeRedis)
    directory: FakeDirectory = field(default_factory=lambda: FakeDirectory({"smollm2-135m-instruct"}))
    started: bool = True

    def image_token_rule(self, spec):
        from shared.image_tokens import image_token_rule

        return image_token_rule(spec.weights.resolve())


@pytest.fixture
def web_settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, database_url=f"sqlite:///{tmp_path / 'web.db'}", cache_dir=tmp_path / "cache",
                             demo_requests_per_minute=3, log_format="text")


@pytest.fixture
def runtime(web_settings: Settings, registry: ModelRegistry) -> WebRuntime:
    upgrade(web_settings.database_url)
    db = Database(web_settings.database_url)
    yield WebRuntime(settings=web_settings, registry=registry, db=db)
    db.dispose()


@pytest.fixture
def app(web_settings: Settings, runtime: WebRuntime):
    return create_app(web_settings, runtime)


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_token_of(html: str) -> str:
    """The CSRF token a page embeds in its forms (as a browser would submit it)."""
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "the page carries a CSRF token"
    return match.group(1)


@pytest.fixture
def csrf_token(client):
    """A fresh CSRF token bound to the client's session."""

    def fetch(path: str = "/") -> str:
        return csrf_token_of(client.get(path).get_data(as_text=True))

    return fetch


@pytest.fixture
def sign_up(client, csrf_token):
    """Sign up through the form; returns the response (a redirect to the dashboard on success)."""

    def submit(email: str = "ada@example.com", password: str = PASSWORD):
        return client.post("/signup", data={"email": email, "password": password,
                                            "csrf_token": csrf_token("/signup")})

    return submit
