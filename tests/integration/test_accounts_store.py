"""Users, API keys, the ledger, reservations and settlement against real SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from api.accounts import api_keys, credits, usage, users
from api.accounts.credits import Usage
from api.store.models import ApiKey, LedgerEntry, UsageRecord, utcnow
from shared.errors import InsufficientCreditsError

PASSWORD = "correct horse battery staple"


def new_user(store, email="ada@example.com", credit_micros=0):
    user = users.create_user(store, email, PASSWORD)
    if credit_micros:
        credits.grant_credits(store, user.id, credit_micros)
    return user


def test_passwords_are_hashed_and_checked(store):
    user = new_user(store)
    assert user.password_hash.startswith("$argon2id$")
    assert users.authenticate(store, "ADA@example.com ", PASSWORD).id == user.id
    assert users.authenticate(store, "ada@example.com", "wrong password") is None
    assert users.authenticate(store, "nobody@example.com", PASSWORD) is None


def test_an_email_signs_up_once(store):
    new_user(store)
    with pytest.raises(users.AccountError, match="already exists"):
        users.create_user(store, "Ada@Example.com", PASSWORD)


def test_keys_are_stored_only_as_hashes(store, redis_client):
    user = new_user(store)
    created = api_keys.create_key(store, redis_client, user.id, "laptop")
    assert created.secret.startswith("llg_sk_") and len(created.secret) >= len("llg_sk_") + 32
    with store.transaction() as session:
        row = session.scalar(select(ApiKey))
        assert row.key_hash == api_keys.hash_secret(created.secret)
        assert created.secret not in (row.key_hash, row.prefix, row.name)
    assert created.secret.startswith(row.prefix) and len(row.prefix) < 16
    identity = api_keys.lookup_key(store, redis_client, created.secret)
    assert (identity.user_id, identity.key_id) == (user.id, created.record.id)
    # Rate limits live under a fingerprint of the key, the same whether the lookup hit the cache.
    assert identity.fingerprint == api_keys.hash_secret(created.secret)[:32]
    assert api_keys.lookup_key(store, redis_client, created.secret) == identity


def test_revocation_takes_effect_at_once_despite_the_cache(store, redis_client):
    user = new_user(store)
    created = api_keys.create_key(store, redis_client, user.id, "ci")
    assert api_keys.lookup_key(store, redis_client, created.secret) is not None  # now cached
    assert redis_client.get(api_keys.cache_key(api_keys.hash_secret(created.secret))) is not None
    assert api_keys.revoke_key(store, redis_client, user.id, created.record.id)
    assert api_keys.lookup_key(store, redis_client, created.secret) is None
    assert not api_keys.revoke_key(store, redis_client, user.id, created.record.id)
    assert [k.id for k in api_keys.list_keys(store, user.id)] == []
    assert [k.id for k in api_keys.list_keys(store, user.id, include_revoked=True)] == [created.record.id]


def test_a_user_cannot_revoke_someone_elses_key(store, redis_client):
    owner, other = new_user(store), new_user(store, "eve@example.com")
    created = api_keys.create_key(store, redis_client, owner.id, "mine")
    assert not api_keys.revoke_key(store, redis_client, other.id, created.record.id)
    assert api_keys.lookup_key(store, redis_client, created.secret) is not None


@pytest.mark.parametrize("secret", ["", "sk-123", "llg_sk_short", "llg_sk_" + "a" * 43 + " ", "llg_sk_" + "é" * 40])
def test_malformed_and_unknown_keys_identify_nobody(store, redis_client, secret):
    assert api_keys.lookup_key(store, redis_client, secret) is None
    assert api_keys.lookup_key(store, redis_client, api_keys.generate_secret()) is None


def test_the_balance_follows_the_ledger(store):
    user = new_user(store)
    assert credits.grant_credits(store, user.id, 5_000_000) == 5_000_000
    assert credits.grant_credits(store, user.id, 250_000, kind="top_up") == 5_250_000
    with pytest.raises(ValueError):
        credits.grant_credits(store, user.id, 0)
    assert credits.get_balance(store, user.id).balance_micros == 5_250_000
    with store.transaction() as session:
        assert session.scalar(select(func.sum(LedgerEntry.amount_micros))) == 5_250_000


def test_reservation_and_settlement(store):
    user = new_user(store, credit_micros=1_000)
    credits.reserve(store, request_id="req-1", user_id=user.id, api_key_id=None, model="m",
                    amount_micros=800, expires_in=60)
    assert credits.get_balance(store, user.id) == credits.Balance(1_000, 800)
    with pytest.raises(InsufficientCreditsError) as refused:
        credits.reserve(store, request_id="req-2", user_id=user.id, api_key_id=None, model="m",
                        amount_micros=201, expires_in=60)
    assert refused.value.status == 402 and refused.value.code == "insufficient_credits"

    assert credits.settle(store, request_id="req-1", usage=Usage(10, 20), cost_micros=300, endpoint="chat",
                          status="ok", latency_ms=12)
    assert credits.get_balance(store, user.id) == credits.Balance(700, 0)
    # A retried settlement (or a redelivered job) never charges twice.
    assert not credits.settle(store, request_id="req-1", usage=Usage(10, 20), cost_micros=300,
                              endpoint="chat", status="ok", latency_ms=12)
    assert credits.get_balance(store, user.id) == credits.Balance(700, 0)
    [record] = usage.recent_requests(store, user.id)
    assert (record.prompt_tokens, record.completion_tokens, record.cost_micros, record.status) == (10, 20, 300, "ok")


def test_a_failed_request_costs_nothing_but_is_logged(store):
    user = new_user(store, credit_micros=1_000)
    credits.reserve(store, request_id="r", user_id=user.id, api_key_id=None, model="m", amount_micros=500,
                    expires_in=60)
    assert credits.settle(store, request_id="r", usage=Usage(), cost_micros=0, endpoint="chat",
                          status="model_unavailable", latency_ms=5)
    assert credits.get_balance(store, user.id) == credits.Balance(1_000, 0)
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(LedgerEntry)) == 1  # the grant only
        assert session.scalar(select(UsageRecord.status)) == "model_unavailable"


def test_concurrent_reservations_never_overspend(store):
    cost, affordable, attempts = 300, 7, 40
    user = new_user(store, credit_micros=cost * affordable + cost - 1)
    admitted, refused = [], []

    def attempt(index: int) -> None:
        try:
            credits.reserve(store, request_id=f"req-{index}", user_id=user.id, api_key_id=None, model="m",
                            amount_micros=cost, expires_in=60)
            admitted.append(index)
        except InsufficientCreditsError:
            refused.append(index)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == affordable and len(refused) == attempts - affordable
    def settle(index: int) -> None:
        credits.settle(store, request_id=f"req-{index}", usage=Usage(1, 1), cost_micros=cost, endpoint="chat",
                       status="ok", latency_ms=1)

    # Each admitted request is settled twice, concurrently: it must be charged once.
    settlers = [threading.Thread(target=settle, args=(i,)) for i in admitted for _ in range(2)]
    for thread in settlers:
        thread.start()
    for thread in settlers:
        thread.join()
    assert credits.get_balance(store, user.id) == credits.Balance(cost - 1, 0)


def test_expired_reservations_are_found(store):
    user = new_user(store, credit_micros=1_000)
    credits.reserve(store, request_id="old", user_id=user.id, api_key_id=None, model="m", amount_micros=100,
                    expires_in=1)
    credits.reserve(store, request_id="new", user_id=user.id, api_key_id=None, model="m", amount_micros=100,
                    expires_in=3600)
    assert credits.expired_reservations(store, now=utcnow() + timedelta(seconds=5)) == ["old"]


def test_daily_usage_has_one_entry_per_day(store):
    user = new_user(store, credit_micros=1_000)
    credits.reserve(store, request_id="a", user_id=user.id, api_key_id=None, model="m", amount_micros=100,
                    expires_in=60)
    credits.settle(store, request_id="a", usage=Usage(3, 4), cost_micros=9, endpoint="chat", status="ok",
                   latency_ms=1)
    days = usage.daily_usage(store, user.id, days=7)
    assert len(days) == 7 and days[-1].day == utcnow().date()
    assert (days[-1].requests, days[-1].tokens, days[-1].cost_micros) == (1, 7, 9)
    assert sum(d.requests for d in days[:-1]) == 0


def test_a_sign_up_credit_comes_with_the_account_in_one_transaction(store):
    user = users.create_user(store, "new@example.com", PASSWORD, starting_credit_micros=5_000_000)
    assert credits.get_balance(store, user.id).balance_micros == 5_000_000
    [entry] = credits.ledger_entries(store, user.id)
    assert (entry.kind, entry.amount_micros, entry.note) == ("grant", 5_000_000, "Sign-up credit")
