"""The dashboard's usage chart: tokens per day as bars, laid out here and drawn as inline SVG.

Layout is plain arithmetic on the daily totals, so it is tested without a browser; the
template only writes the numbers into <rect> and <text> elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from api.accounts.usage import DailyUsage
from api.web.template_filters import count, usd

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 30  # room for the axis labels
BAR_FILL = 0.7  # share of each day's slot the bar covers


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # shown on hover, read by screen readers


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "middle"  # SVG text-anchor: start, middle or end


@dataclass(frozen=True)
class UsageChart:
    width: int
    height: int
    bars: list[Bar]
    day_labels: list[Label]
    value_labels: list[Label]  # the y axis: 0, half, top
    gridlines: list[float]  # y positions
    plot_left: float
    plot_right: float
    plot_bottom: float
    total_requests: int
    total_tokens: int
    total_cost_micros: int

    @property
    def empty(self) -> bool:
        return self.total_requests == 0


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `value` (an axis top)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def layout(days: Sequence[DailyUsage]) -> UsageChart:
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    top_value = nice_ceiling(max((day.tokens for day in days), default=0) or 1)
    slot = plot_width / max(len(days), 1)
    bars, day_labels = [], []
    for index, day in enumerate(days):
        height = plot_height * day.tokens / top_value
        x = LEFT + index * slot
        bars.append(Bar(x=round(x + slot * (1 - BAR_FILL) / 2, 2), y=round(TOP + plot_height - height, 2),
                        width=round(slot * BAR_FILL, 2), height=round(height, 2),
                        title=f"{_day(day)}: {count(day.requests)} requests, "
                              f"{count(day.tokens)} tokens, {usd(day.cost_micros)}"))
        # Labels under the first, the middle and the last day only keep the axis legible on a
        # phone; the outer two align with their bar's outer edge so they never leave the chart.
        if index == 0:
            day_labels.append(Label(x=bars[-1].x, y=HEIGHT - 8, text=_day(day), anchor="start"))
        elif index == len(days) - 1:
            day_labels.append(Label(x=round(bars[-1].x + bars[-1].width, 2), y=HEIGHT - 8, text=_day(day),
                                    anchor="end"))
        elif index == len(days) // 2:
            day_labels.append(Label(x=round(x + slot / 2, 2), y=HEIGHT - 8, text=_day(day)))
    value_labels, gridlines = [], []
    for fraction in (0, 0.5, 1):
        y = round(TOP + plot_height * (1 - fraction), 2)
        gridlines.append(y)
        value = top_value * fraction
        value_labels.append(Label(x=LEFT - 8, y=y + 4, text=_short_count(value), anchor="end"))
    return UsageChart(width=WIDTH, height=HEIGHT, bars=bars, day_labels=day_labels, value_labels=value_labels,
                      gridlines=gridlines, plot_left=LEFT, plot_right=WIDTH - RIGHT, plot_bottom=TOP + plot_height,
                      total_requests=sum(day.requests for day in days),
                      total_tokens=sum(day.tokens for day in days),
                      total_cost_micros=sum(day.cost_micros for day in days))


def _day(day: DailyUsage) -> str:
    return f"{day.day:%b} {day.day.day}"


def _short_count(value: float) -> str:
    """1500 -> '1.5k', 2000000 -> '2M': axis labels stay narrow."""
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"
