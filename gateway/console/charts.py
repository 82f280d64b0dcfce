"""Small charts drawn on the server as inline SVG (templates/charts.html draws them) for the costs page: the
geometry here, numbers only; no chart library, nothing for the browser to fetch or run. (The fine-tuning loss
curve is gateway.console.curve.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

W, H, PAD = 640, 140, 4  # the drawing's size in SVG units (it scales to its box)
Fmt = Callable[[Any], str]


def _top(values: list[float | None]) -> float:
    return max((v for v in values if v is not None), default=0.0) or 1.0


def bars(values: list[float | None], labels: list[str], fmt: Fmt = str) -> dict[str, Any]:
    """One bar per value (None: no bar), scaled to the largest; ``fmt`` writes a value for its tooltip."""
    top, n = _top(values), max(len(values), 1)
    step = (W - 2 * PAD) / n
    out = []
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        height = 0.0 if value is None else (H - 2 * PAD) * value / top
        out.append({"x": round(PAD + i * step + step * 0.1, 1), "w": round(step * 0.8, 1),
                    "y": round(H - PAD - height, 1), "h": round(height, 1), "title": f"{label}: {fmt(value)}"})
    return {"w": W, "h": H, "bars": out, "top": fmt(top if any(values) else 0)}


def lines(series: dict[str, list[float | None]], labels: list[str], fmt: Fmt = str) -> dict[str, Any]:
    """One polyline per series over the same x (labels), scaled to the largest value of all; a None breaks
    the line. Series ``i`` has the class ``series-<i>`` (its colour in console.css) and dots with tooltips."""
    everything = [v for values in series.values() for v in values]
    top = _top(everything)
    step = (W - 2 * PAD) / max(len(labels) - 1, 1)
    out = []
    for k, (name, values) in enumerate(series.items()):
        runs: list[list[str]] = [[]]
        dots = []
        for i, value in enumerate(values):
            if value is None:
                runs.append([])
                continue
            x, y = round(PAD + i * step, 1), round(H - PAD - (H - 2 * PAD) * value / top, 1)
            runs[-1].append(f"{x},{y}")
            dots.append({"x": x, "y": y, "title": f"{name} {labels[i]}: {fmt(value)}"})
        out.append({"name": name, "cls": f"series-{k}", "runs": [" ".join(r) for r in runs if r], "dots": dots})
    return {"w": W, "h": H, "lines": out, "top": fmt(top if any(v is not None for v in everything) else None)}
