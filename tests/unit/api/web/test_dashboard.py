"""The dashboard: keys shown once and revocable, balance, ledger, usage chart and recent requests."""

from __future__ import annotations

import re

from api.accounts import api_keys, credits, users
from api.accounts.credits import Usage
from api.accounts.api_keys import KEY_FORMAT


def _create_key(client, csrf_token, name: str = "laptop"):
    return client.post("/dashboard/keys", data={"name": name, "csrf_token": csrf_token("/dashboard")})


def test_dashboard_needs_a_signed_in_user(client):
    response = client.get("/dashboard")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/dashboard"


def test_a_new_key_is_shown_once_and_then_only_by_its_prefix(client, runtime, sign_up, csrf_token):
    sign_up()
    response = _create_key(client, csrf_token, "laptop")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    secret = re.search(r'<code id="new-key" class="secret">([^<]+)</code>', page).group(1)
    assert KEY_FORMAT.match(secret)
    assert api_keys.lookup_key(runtime.db, None, secret).user_id == users.find_user(runtime.db, "ada@example.com").id
    dashboard = client.get("/dashboard").get_data(as_text=True)
    assert secret not in dashboard
    assert f"{secret[:api_keys.VISIBLE_PREFIX_LENGTH]}…" in dashboard
    assert "laptop" in dashboard


def test_revoking_a_key_stops_it_at_once(client, runtime, sign_up, csrf_token):
    sign_up()
    page = _create_key(client, csrf_token).get_data(as_text=True)
    secret = re.search(r'id="new-key" class="secret">([^<]+)<', page).group(1)
    [key] = api_keys.list_keys(runtime.db, users.find_user(runtime.db, "ada@example.com").id)
    response = client.post(f"/dashboard/keys/{key.id}/revoke", data={"csrf_token": csrf_token("/dashboard")})
    assert response.status_code == 302
    assert api_keys.lookup_key(runtime.db, runtime.redis, secret) is None
    dashboard = client.get("/dashboard").get_data(as_text=True)
    assert "The key is revoked" in dashboard
    assert f'data-key-id="{key.id}"' not in dashboard


def test_nobody_revokes_another_users_key(app, client, runtime, sign_up, csrf_token):
    owner = users.create_user(runtime.db, "owner@example.com", "another long password")
    key = api_keys.create_key(runtime.db, None, owner.id, "theirs")
    sign_up()
    client.post(f"/dashboard/keys/{key.record.id}/revoke", data={"csrf_token": csrf_token("/dashboard")})
    assert api_keys.lookup_key(runtime.db, None, key.secret) is not None
    assert "not yours" in client.get("/dashboard").get_data(as_text=True)


def test_requests_their_cost_and_the_ledger_appear(client, runtime, sign_up, csrf_token):
    sign_up()
    user = users.find_user(runtime.db, "ada@example.com")
    key = api_keys.create_key(runtime.db, None, user.id, "server")
    credits.reserve(runtime.db, request_id="req-1", user_id=user.id, api_key_id=key.record.id,
                    model="smollm2-135m-instruct", amount_micros=1000, expires_in=60)
    credits.settle(runtime.db, request_id="req-1", usage=Usage(12, 30), cost_micros=42, endpoint="chat.completions",
                   status="ok", latency_ms=321)
    page = client.get("/dashboard").get_data(as_text=True)
    row = re.search(r'<tr data-request-id="req-1">(.*?)</tr>', page, re.S).group(1)
    assert "smollm2-135m-instruct" in row and "server" in row and "$0.000042" in row and "321 ms" in row
    assert '<span class="stat-value" id="balance">$4.999958</span>' in page
    assert "Sign-up credit" in page and "+$5.00" in page
    assert "1 requests, 42 tokens, $0.000042" in page  # the chart's bar for today


def test_the_keys_rate_limits_are_stated(client, runtime, sign_up, csrf_token):
    sign_up()
    user = users.find_user(runtime.db, "ada@example.com")
    api_keys.create_key(runtime.db, None, user.id, "batch jobs", rate_limit_requests=600)
    page = client.get("/dashboard").get_data(as_text=True)
    assert "Each key may make 60 requests and use 100,000 tokens" in page
    assert "limits: 600 requests, 100,000 tokens per minute, 10 at once" in " ".join(page.split())


def test_a_form_sent_after_the_session_ended_leads_to_login_then_the_dashboard(client, csrf_token):
    response = client.post("/dashboard/keys", data={"name": "late", "csrf_token": csrf_token("/login")})
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/dashboard"
