"""Metric and label names out of PromQL expressions (Prometheus rules, Grafana targets).

Not a full PromQL parser: it removes what cannot hold a metric name (string literals,
range and subquery brackets, label-list clauses) and keeps every identifier that is not a
function call, a keyword, an aggregation or a number. ``promtool`` checks the syntax when
it is installed; this module finds what the expressions query.
"""

from __future__ import annotations

import re

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "atan2", "inf", "nan", "start", "end",
}
IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENT = re.compile(rf"(?<![\w:.$]){IDENT}")
_GRAFANA_VAR = re.compile(r"\$\{?\w+\}?")
_SELECTOR = re.compile(rf"({IDENT})?\s*\{{([^{{}}]*)\}}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\")")


def _strip(expr: str) -> str:
    expr = _GRAFANA_VAR.sub("5m", expr)  # $__rate_interval, $model... (inside [] or "")
    expr = _STRING.sub('""', expr)
    expr = _MATCHERS.sub("{}", expr)
    expr = _BRACKETS.sub("[]", expr)
    return _LABEL_LIST.sub(lambda m: f"{m.group(1)}()", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names the expression selects."""
    text = _strip(expr)
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group(0)
        rest = text[m.end():].lstrip()
        if word.lower() in KEYWORDS or rest.startswith("("):
            continue  # keyword, function or aggregation (`sum by () (...)` was reduced to `sum by() (`)
        if re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        names.add(word)
    # `sum by (x) (...)`: `by()` was reduced so `sum` is followed by `by`, not `(`
    return {n for n in names if not _is_aggregation_before_clause(text, n)}


_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                 "bottomk", "topk", "quantile", "limitk", "limit_ratio"}


def _is_aggregation_before_clause(text: str, name: str) -> bool:
    return name in _AGGREGATIONS and re.search(rf"\b{name}\s+(by|without)\s*\(", text) is not None


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by/without/on/ignoring/group_left/group_right clauses."""
    text = _STRING.sub('""', expr)
    out: set[str] = set()
    for m in _LABEL_LIST.finditer(text):
        out.update(s.strip() for s in m.group(2).split(",") if s.strip())
    return out


def selectors(expr: str) -> list[tuple[str | None, dict[str, str]]]:
    """(metric name or None, {label: matcher value}) for each ``name{...}`` selector."""
    text = _GRAFANA_VAR.sub("5m", expr)
    # same-length mask of string contents, so braces inside regexes are not selectors
    masked = _STRING.sub(lambda m: m.group(0)[0] + "_" * (len(m.group(0)) - 2) + m.group(0)[-1], text)
    out = []
    for m in _SELECTOR.finditer(masked):
        body = text[m.start(2):m.end(2)]
        labels = {lm.group(1): lm.group(3) for lm in _MATCHER.finditer(body)}
        name = m.group(1)
        if name is not None and name.lower() in KEYWORDS:
            name = None
        out.append((name, labels))
    return out
