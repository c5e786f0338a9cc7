"""ImageFetcher against a real HTTP server on loopback: refused by default, fetched only where a test
allows the address, and every other way out (redirects, schemes, sizes, slowness) closed."""

from __future__ import annotations

import time

import pytest

from api.image_fetch import FetchError, ImageFetcher
from api.url_guard import AddressPolicy

MAX_BYTES = 100_000


def fetcher(allowed_networks=(), allowed_hosts=(), timeout: float = 5.0, max_redirects: int = 3) -> ImageFetcher:
    return ImageFetcher(AddressPolicy(allowed_networks, allowed_hosts), max_bytes=MAX_BYTES, timeout=timeout,
                        max_redirects=max_redirects)


def refusal(fetch: ImageFetcher, url: str) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch.fetch(url)
    return caught.value


def test_a_loopback_server_is_refused_by_default_without_being_contacted(image_server):
    error = refusal(fetcher(), image_server.url("/image.png"))
    assert "127.0.0.1 is a loopback address" in str(error)
    assert error.code == "invalid_image_url"
    assert image_server.requests == []


def test_the_same_server_is_fetched_once_its_address_is_allowed(image_server):
    fetched = fetcher(["127.0.0.1/32"]).fetch(image_server.url("/image.png"))
    assert fetched.data == image_server.image
    assert fetched.media_type == "image/png"


def test_localhost_by_name_is_refused(image_server):
    error = refusal(fetcher(), f"http://localhost:{image_server.port}/image.png")
    assert "loopback" in str(error)
    assert image_server.requests == []


def test_a_redirect_to_a_refused_address_is_refused(image_server, second_image_server):
    # 127.0.0.2 is allowed; it redirects to 127.0.0.1, which is not.
    start = second_image_server.url(f"/redirect?to={image_server.url('/image.png')}")
    error = refusal(fetcher(["127.0.0.2/32"]), start)
    assert "127.0.0.1 is a loopback address" in str(error)
    assert len(second_image_server.requests) == 1 and image_server.requests == []


def test_a_redirect_between_allowed_addresses_is_followed(image_server, second_image_server):
    start = second_image_server.url(f"/redirect?status=307&to={image_server.url('/image.png')}")
    assert fetcher(["127.0.0.0/8"]).fetch(start).data == image_server.image


def test_a_relative_redirect_is_resolved_against_the_url(image_server):
    assert fetcher(["127.0.0.1/32"]).fetch(image_server.url("/redirect?to=/image.png")).data == image_server.image


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/image.png", "gopher://127.0.0.1:70/x"])
def test_a_redirect_to_another_scheme_is_refused(image_server, target):
    error = refusal(fetcher(["127.0.0.1/32"]), image_server.url(f"/redirect?to={target}"))
    assert "must use http or https" in str(error)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/cat.png", "gopher://example.com/",
                                 "dict://127.0.0.1:6379/info", "//example.com/cat.png", "http:///cat.png",
                                 "http://user:secret@example.com/cat.png", "http://example.com:99999/cat.png"])
def test_urls_that_are_not_plain_http_are_refused(url):
    assert refusal(fetcher(), url).code == "invalid_image_url"


def test_redirects_beyond_the_limit_are_refused(image_server):
    error = refusal(fetcher(["127.0.0.1/32"]), image_server.url("/redirect-loop"))
    assert "Too many redirects" in str(error) and "limit is 3" in str(error)
    assert len(image_server.requests) == 4  # the first request and three redirects


def test_no_redirects_at_all_when_the_limit_is_zero(image_server):
    error = refusal(fetcher(["127.0.0.1/32"], max_redirects=0), image_server.url("/redirect?to=/image.png"))
    assert "Too many redirects" in str(error)


def test_a_host_outside_the_allow_list_is_refused(image_server):
    error = refusal(fetcher(["127.0.0.1/32"], allowed_hosts=["images.example.com"]), image_server.url("/image.png"))
    assert "not among the hosts" in str(error)
    assert image_server.requests == []


def test_content_that_is_not_an_image_is_refused(image_server):
    error = refusal(fetcher(["127.0.0.1/32"]), image_server.url("/page.html"))
    assert "'text/html'" in str(error)
    assert error.code == "invalid_image_format"


def test_an_error_status_is_refused(image_server):
    assert "HTTP 404" in str(refusal(fetcher(["127.0.0.1/32"]), image_server.url("/missing.png")))


def test_a_declared_size_over_the_cap_is_refused_before_reading(image_server):
    error = refusal(fetcher(["127.0.0.1/32"]), image_server.url(f"/large.png?bytes={MAX_BYTES + 1}"))
    assert error.code == "image_too_large"


def test_an_undeclared_size_over_the_cap_is_refused_while_reading(image_server):
    error = refusal(fetcher(["127.0.0.1/32"]), image_server.url(f"/undeclared-large.png?bytes={50 * MAX_BYTES}"))
    assert error.code == "image_too_large"


def test_a_slow_server_runs_into_the_whole_fetch_deadline(image_server):
    # Each byte comes well within any per-read timeout; only the deadline of the whole fetch stops it.
    started = time.monotonic()
    error = refusal(fetcher(["127.0.0.1/32"], timeout=1.0), image_server.url("/slow.png?interval=0.1"))
    assert "Timed out" in str(error)
    assert time.monotonic() - started < 3.0


def test_under_gevent_the_deadline_also_covers_a_silent_server(run_under_gevent):
    # A server that accepts and never answers: the gevent timer ends the fetch on time.
    result = run_under_gevent("""
        import socket
        from api.image_fetch import FetchError, ImageFetcher
        from api.url_guard import AddressPolicy

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        fetch = ImageFetcher(AddressPolicy(["127.0.0.1/32"]), max_bytes=1000, timeout=1.0, max_redirects=0)
        started = time.monotonic()
        try:
            fetch.fetch(f"http://127.0.0.1:{port}/image.png")
            outcome = "fetched"
        except FetchError as exc:
            outcome = str(exc)
        print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}))
    """)
    assert "Timed out" in result["outcome"]
    assert result["seconds"] < 2.0
