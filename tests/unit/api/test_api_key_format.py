from api.accounts.api_keys import KEY_FORMAT, VISIBLE_PREFIX_LENGTH, generate_secret, hash_secret


def test_generated_keys_carry_256_random_bits_in_url_safe_characters():
    keys = {generate_secret() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert KEY_FORMAT.match(key)
        assert len(key) - len("llg_sk_") >= 43  # 32 random bytes, base64url


def test_the_stored_hash_is_sha256_hex():
    digest = hash_secret("llg_sk_" + "a" * 43)
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_the_visible_prefix_is_too_short_to_guess_from():
    assert VISIBLE_PREFIX_LENGTH - len("llg_sk_") <= 6
