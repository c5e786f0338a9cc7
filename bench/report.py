"""How the benchmark scripts print results: an aligned table for people, one JSON line for tools."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional, Sequence, TextIO


def format_ms(seconds: Optional[float]) -> str:
    """Seconds as milliseconds with a precision that suits their size; '-' when unmeasured."""
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def format_mib(kib: Optional[int]) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], file: TextIO = sys.stdout,
                left: Sequence[int] = (0,)) -> None:
    """Columns padded to their widest cell; those in `left` left-aligned, the others right."""
    cells = [[str(c) for c in columns]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(row, widths)))

    print(line(cells[0]).rstrip(), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells[1:]:
        print(line(row).rstrip(), file=file)


def print_json_line(payload: dict, file: TextIO = sys.stdout) -> None:
    """The machine-readable result: the output's only line that starts with '{'."""
    print(json.dumps(payload, separators=(",", ":"), default=str), file=file, flush=True)


def host_load() -> dict:
    """The machine's CPU count and load averages: on a shared machine, what else was running."""
    one, five, fifteen = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg": [round(one, 2), round(five, 2), round(fifteen, 2)]}


def describe_load(load: dict) -> str:
    return f"{load['cpus']} CPUs, load average {' '.join(str(v) for v in load['loadavg'])} (1/5/15 min)"
