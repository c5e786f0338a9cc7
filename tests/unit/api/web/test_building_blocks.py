"""The website's pure parts: the secret key file, throttling windows, money and the usage chart."""

from __future__ import annotations

import stat
from datetime import date, timedelta

from api.accounts.usage import DailyUsage
from api.web.cookies import load_secret_key
from api.web.template_filters import usd
from api.web.throttle import LoginThrottle, Window, WindowCounter
from api.web.usage_chart import TOP, layout, nice_ceiling
from shared.settings import Settings
from tests.unit.api.web.conftest import FakeRedis


def test_the_secret_key_is_made_once_private_and_shared(tmp_path):
    settings = Settings.from_env({}, cache_dir=tmp_path)
    first = load_secret_key(settings)
    assert len(first) >= 48
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert load_secret_key(settings) == first  # what the next web process reads
    assert load_secret_key(Settings.from_env({}, cache_dir=tmp_path, secret_key="configured")) == "configured"
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no drafts left behind


def test_a_window_refuses_past_its_limit_and_says_when_to_retry():
    now = [1_000_000.0]
    counter = WindowCounter(FakeRedis(), clock=lambda: now[0])
    window = Window("test", limit=2, seconds=60)
    assert counter.hit(window, "a") is None and counter.hit(window, "a") is None
    refusal = counter.hit(window, "a")
    assert refusal is not None and 0 < refusal.retry_after <= 60
    assert counter.hit(window, "b") is None
    now[0] += 60  # the next window starts empty
    assert counter.hit(window, "a") is None


def test_login_throttle_counts_failures_per_email_and_per_address():
    throttle = LoginThrottle(WindowCounter(FakeRedis()))
    for attempt in range(10):
        assert throttle.check("ada@example.com", "192.0.2.1") is None
        throttle.failed("ada@example.com", "192.0.2.1")
    refusal = throttle.check("ada@example.com", "192.0.2.9")
    assert refusal is not None and 1 <= refusal.minutes <= 15
    for number in range(40):
        throttle.failed(f"user{number}@example.com", "192.0.2.1")
    assert throttle.check("someone@example.com", "192.0.2.1") is not None  # the address's 50 are spent
    assert throttle.check("someone@example.com", "192.0.2.2") is None


def test_money_shows_cents_and_only_the_digits_that_matter():
    assert usd(5_000_000) == "$5.00"
    assert usd(4_999_958) == "$4.999958"
    assert usd(20_000) == "$0.02"
    assert usd(42) == "$0.000042"
    assert usd(-120) == "-$0.00012"
    assert usd(1_234_500_000) == "$1,234.50"


def test_the_chart_scales_bars_to_a_round_axis_top():
    assert [nice_ceiling(v) for v in (1, 3, 7, 10, 11, 260, 5000)] == [1, 5, 10, 10, 20, 500, 5000]
    today = date(2026, 11, 25)
    days = [DailyUsage(today - timedelta(days=13 - i), requests=i % 3, tokens=i * 100, cost_micros=i)
            for i in range(14)]
    chart = layout(days)
    assert len(chart.bars) == 14
    assert chart.value_labels[-1].text == "2k"  # 1,300 tokens at most: the axis tops at 2,000
    tallest = chart.bars[-1]
    assert tallest.height > chart.bars[1].height > chart.bars[0].height == 0
    assert abs(tallest.height - (chart.plot_bottom - TOP) * 1300 / 2000) < 0.01
    assert all(abs(bar.y + bar.height - chart.plot_bottom) < 0.02 for bar in chart.bars)
    assert [label.text for label in chart.day_labels] == ["Nov 12", "Nov 19", "Nov 25"]
    assert chart.total_tokens == sum(day.tokens for day in days) and not chart.empty


def test_an_empty_chart_says_so():
    chart = layout([DailyUsage(date(2026, 11, d), 0, 0, 0) for d in range(1, 15)])
    assert chart.empty and all(bar.height == 0 for bar in chart.bars)
