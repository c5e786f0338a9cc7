from types import SimpleNamespace

import pytest

from api import authentication
from api.accounts.api_keys import KeyIdentity, generate_secret
from shared.errors import AuthenticationError

VALID = generate_secret()


@pytest.fixture
def runtime(monkeypatch):
    known = {VALID: KeyIdentity(key_id=3, user_id=7)}
    monkeypatch.setattr(authentication, "lookup_key", lambda db, cache, secret: known.get(secret))
    return SimpleNamespace(db=None, redis=None)


def test_a_known_key_identifies_its_user(runtime):
    assert authentication.authenticate(runtime, f"Bearer {VALID}") == KeyIdentity(3, 7)
    assert authentication.authenticate(runtime, f"bearer   {VALID} ") == KeyIdentity(3, 7)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", VALID, f"Token {VALID}"])
def test_a_missing_key_is_a_401_that_says_how_to_send_one(runtime, header):
    with pytest.raises(AuthenticationError) as refused:
        authentication.authenticate(runtime, header)
    assert refused.value.status == 401 and refused.value.code == "invalid_api_key"
    assert "Authorization" in refused.value.message


def test_an_unknown_key_is_a_401_that_never_echoes_the_whole_key(runtime):
    unknown = generate_secret()
    with pytest.raises(AuthenticationError) as refused:
        authentication.authenticate(runtime, f"Bearer {unknown}")
    assert refused.value.code == "invalid_api_key"
    assert unknown not in refused.value.message and unknown[-4:] in refused.value.message


def test_redaction_hides_short_keys_entirely():
    assert authentication.redact("abc") == "***"
    assert authentication.redact("llg_sk_abcdefghijklmnop") == "llg_sk_abc********mnop"
