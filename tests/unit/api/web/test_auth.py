"""Sign-up, login, logout: sessions, CSRF, throttling, the sign-up credit."""

from __future__ import annotations

import dataclasses

from api.accounts import credits, users
from api.accounts.money import dollars_to_micros
from api.app import create_app
from tests.unit.api.web.conftest import PASSWORD, csrf_token_of


def test_sign_up_grants_the_signup_credit_and_signs_in(client, runtime, sign_up):
    response = sign_up("Ada@Example.com")
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"
    user = users.find_user(runtime.db, "ada@example.com")
    assert user is not None and user.password_hash.startswith("$argon2")
    assert credits.get_balance(runtime.db, user.id).balance_micros == dollars_to_micros("5.00")
    [entry] = credits.ledger_entries(runtime.db, user.id)
    assert (entry.kind, entry.note) == ("grant", "Sign-up credit")
    dashboard = client.get("/dashboard")
    assert dashboard.status_code == 200
    assert "ada@example.com" in dashboard.get_data(as_text=True)


def test_sign_up_refusals_are_shown_on_the_form(client, runtime, sign_up):
    short = sign_up(password="short")
    assert short.status_code == 400
    assert "at least 8 characters" in short.get_data(as_text=True)
    assert sign_up().status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token_of(client.get("/").get_data(as_text=True))})
    again = sign_up()
    assert again.status_code == 400
    assert "already exists" in again.get_data(as_text=True)
    assert users.count_users(runtime.db) == 1


def test_forms_without_a_csrf_token_are_refused_with_a_page(client, runtime):
    response = client.post("/signup", data={"email": "eve@example.com", "password": PASSWORD})
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "This form has expired" in response.get_data(as_text=True)
    assert users.find_user(runtime.db, "eve@example.com") is None


def test_login_with_the_right_password_and_back_to_the_page_asked_for(client, sign_up, csrf_token):
    sign_up()
    client.post("/logout", data={"csrf_token": csrf_token()})
    assert client.get("/dashboard").headers["Location"] == "/login?next=/dashboard"
    wrong = client.post("/login", data={"email": "ada@example.com", "password": "not my password",
                                        "csrf_token": csrf_token("/login")})
    assert wrong.status_code == 401
    assert "not right" in wrong.get_data(as_text=True)
    right = client.post("/login", data={"email": "ADA@example.com", "password": PASSWORD, "next": "/dashboard",
                                        "csrf_token": csrf_token("/login")})
    assert right.status_code == 302 and right.headers["Location"] == "/dashboard"


def test_login_never_redirects_to_another_site(client, sign_up, csrf_token):
    sign_up()
    client.post("/logout", data={"csrf_token": csrf_token()})
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        response = client.post("/login", data={"email": "ada@example.com", "password": PASSWORD, "next": target,
                                               "csrf_token": csrf_token("/login")})
        assert response.headers["Location"] == "/dashboard", target
        client.post("/logout", data={"csrf_token": csrf_token()})


def test_logout_invalidates_a_copy_of_the_session_cookie(app, client, sign_up, csrf_token):
    sign_up()
    stolen = client.get_cookie("llamagate_session").value
    client.post("/logout", data={"csrf_token": csrf_token()})
    other = app.test_client()
    other.set_cookie("llamagate_session", stolen)
    response = other.get("/dashboard")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_failed_logins_are_throttled_per_email(client, sign_up, csrf_token):
    sign_up()
    client.post("/logout", data={"csrf_token": csrf_token()})
    token = csrf_token("/login")
    for _ in range(10):
        assert client.post("/login", data={"email": "ada@example.com", "password": "guess",
                                           "csrf_token": token}).status_code == 401
    blocked = client.post("/login", data={"email": "ada@example.com", "password": PASSWORD, "csrf_token": token})
    assert blocked.status_code == 429
    assert "Too many failed attempts. Please try again in" in blocked.get_data(as_text=True)
    # Another account from the same address is not locked out by someone guessing Ada's password.
    sign_up("bob@example.com")
    client.post("/logout", data={"csrf_token": csrf_token()})
    assert client.post("/login", data={"email": "bob@example.com", "password": PASSWORD,
                                       "csrf_token": csrf_token("/login")}).status_code == 302


def test_session_cookie_flags(sign_up, client, app, csrf_token):
    response = sign_up()
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure_client = app.test_client()
    page = secure_client.get("/", base_url="https://llamagate.example")
    assert "Secure" in page.headers["Set-Cookie"]


def test_behind_a_trusted_proxy_https_marks_the_cookie_secure(runtime, web_settings):
    runtime.settings = dataclasses.replace(web_settings, trusted_proxies=1)
    client = create_app(runtime.settings, runtime).test_client()
    page = client.get("/", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert "Secure" in page.headers["Set-Cookie"]
    runtime.settings = web_settings  # no proxy configured: the header is ignored
    untrusted = create_app(web_settings, runtime).test_client()
    assert "Secure" not in untrusted.get("/", headers={"X-Forwarded-Proto": "https"}).headers["Set-Cookie"]
