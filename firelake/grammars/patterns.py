"""EventBridge event patterns: compile once, match many events.

Lambda event source mappings filter with the EventBridge pattern language, and so do
Firelake routers (``filters`` and pattern ``rules``). A pattern is a JSON object whose keys
name event fields (nested objects for nested fields) and whose leaves are *lists* of
matchers; a field matches when any matcher in its list matches, an event matches when every
field of the pattern matches. Supported matchers, as documented for EventBridge:

- a literal string, number, boolean or ``null``: exact match;
- ``{"prefix": "p"}``, ``{"suffix": "s"}``, ``{"equals-ignore-case": "x"}``,
  ``{"wildcard": "a*b"}``;
- ``{"numeric": [">", 0, "<=", 5]}`` (one or two comparisons, JSON numbers only);
- ``{"exists": true|false}``;
- ``{"anything-but": value | [values] | {"prefix": ...} | {"suffix": ...}}``;
- ``{"$or": [pattern, ...]}`` as a key of the pattern object.

An event field holding an array matches when any of its elements matches. A missing field
matches only ``{"exists": false}``. Malformed patterns raise :class:`PatternError` naming the
path, so configuration errors surface at start, not per event.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["MISSING", "Matcher", "PatternError", "compile_pattern", "compile_patterns"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: The value a matcher sees for a field the event does not have.
MISSING: Any = _Missing()

#: A compiled pattern: takes a parsed event (dict) and says whether it matches.
Matcher = Callable[[Mapping[str, Any]], bool]
_Leaf = Callable[[Any], bool]

_NUMERIC_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class PatternError(ValueError):
    """A pattern that is not valid EventBridge syntax; ``path`` names where."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _literal(expected: Any) -> _Leaf:
    if _is_number(expected):
        # EventBridge compares numbers by value: 5 matches 5.0, never the string "5".
        return lambda v: _is_number(v) and v == expected
    return lambda v: v is not MISSING and type(v) is type(expected) and v == expected


def _string_leaf(path: str, name: str, arg: Any, test: Callable[[str], bool]) -> _Leaf:
    if not isinstance(arg, str):
        raise PatternError(path, f"{name!r} takes a string, got {arg!r}")
    return lambda v: isinstance(v, str) and test(v)


def _numeric(path: str, arg: Any) -> _Leaf:
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise PatternError(path, "'numeric' takes [op, n] or [op, n, op, n]")
    checks: list[tuple[Callable[[float, float], bool], float]] = []
    for op, bound in zip(arg[::2], arg[1::2], strict=True):
        if op not in _NUMERIC_OPS or not _is_number(bound):
            raise PatternError(path, f"'numeric' comparison {op!r} {bound!r} is not valid")
        checks.append((_NUMERIC_OPS[op], bound))
    return lambda v: _is_number(v) and all(check(v, bound) for check, bound in checks)


def _anything_but(path: str, arg: Any) -> _Leaf:
    if isinstance(arg, dict):
        inner = _matcher_object(path, arg, allow=("prefix", "suffix", "equals-ignore-case"))
        return lambda v: v is not MISSING and not inner(v)
    values = arg if isinstance(arg, list) else [arg]
    if not values or any(isinstance(x, (dict, list)) for x in values):
        raise PatternError(path, "'anything-but' takes a value, a list of values or a matcher")
    leaves = [_literal(x) for x in values]
    return lambda v: v is not MISSING and not any(leaf(v) for leaf in leaves)


def _matcher_object(
    path: str, spec: Mapping[str, Any], allow: Sequence[str] | None = None
) -> _Leaf:
    if len(spec) != 1:
        raise PatternError(path, f"a matcher object has exactly one key, got {sorted(spec)}")
    ((name, arg),) = spec.items()
    if allow is not None and name not in allow:
        raise PatternError(path, f"{name!r} is not allowed here (allowed: {', '.join(allow)})")
    if name == "prefix":
        return _string_leaf(path, name, arg, lambda v: v.startswith(arg))
    if name == "suffix":
        return _string_leaf(path, name, arg, lambda v: v.endswith(arg))
    if name == "equals-ignore-case":
        folded = arg.casefold() if isinstance(arg, str) else arg
        return _string_leaf(path, name, arg, lambda v: v.casefold() == folded)
    if name == "wildcard":
        if not isinstance(arg, str):
            raise PatternError(path, f"'wildcard' takes a string, got {arg!r}")
        # Only '*' is special in EventBridge wildcards: escape everything else.
        regex = re.compile(".*".join(re.escape(part) for part in arg.split("*")), re.DOTALL)
        return lambda v: isinstance(v, str) and regex.fullmatch(v) is not None
    if name == "numeric":
        return _numeric(path, arg)
    if name == "exists":
        if not isinstance(arg, bool):
            raise PatternError(path, "'exists' takes true or false")
        return (lambda v: v is not MISSING) if arg else (lambda v: v is MISSING)
    if name == "anything-but":
        return _anything_but(path, arg)
    raise PatternError(path, f"unknown matcher {name!r}")


def _field(path: str, matchers: Any) -> _Leaf:
    if not isinstance(matchers, list) or not matchers:
        raise PatternError(path, "a field's matchers must be a non-empty list")
    leaves = [
        _matcher_object(path, m) if isinstance(m, dict) else _literal(m)
        for m in matchers
        if not isinstance(m, list) or _raise(path, "matchers are values or objects, not lists")
    ]

    def match(value: Any) -> bool:
        if isinstance(value, list):
            # An array field matches when any element does (EventBridge semantics).
            return any(leaf(item) for item in value for leaf in leaves)
        return any(leaf(value) for leaf in leaves)

    return match


def _raise(path: str, reason: str) -> bool:
    raise PatternError(path, reason)


def _object(path: str, pattern: Any) -> Matcher:
    if not isinstance(pattern, Mapping) or not pattern:
        raise PatternError(path, "a pattern is a non-empty object")
    parts: list[Matcher] = []
    for key, spec in pattern.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            if not isinstance(spec, list) or len(spec) < 2:
                raise PatternError(where, "'$or' takes a list of at least two patterns")
            options = [_object(f"{where}[{i}]", option) for i, option in enumerate(spec)]
            parts.append(lambda event, options=options: any(o(event) for o in options))
        elif isinstance(spec, dict):
            inner = _object(where, spec)

            def nested(event: Mapping[str, Any], key: str = key, inner: Matcher = inner) -> bool:
                value = event.get(key, MISSING)
                return isinstance(value, dict) and inner(value)

            parts.append(nested)
        else:
            leaf = _field(where, spec)
            parts.append(lambda event, key=key, leaf=leaf: leaf(event.get(key, MISSING)))
    return lambda event: all(part(event) for part in parts)


def compile_pattern(pattern: Any, path: str = "pattern") -> Matcher:
    """A matcher for one EventBridge pattern (PatternError naming ``path`` if malformed)."""
    try:
        return _object("", pattern)
    except PatternError as exc:
        raise PatternError(f"{path}.{exc.path}".rstrip("."), exc.reason) from None


def compile_patterns(patterns: Sequence[Any], path: str = "filters") -> Matcher | None:
    """One matcher for a list of patterns (any may match, like Lambda's FilterCriteria).

    ``None`` for an empty list: no filtering.
    """
    if not patterns:
        return None
    matchers = [compile_pattern(p, f"{path}[{i}]") for i, p in enumerate(patterns)]
    if len(matchers) == 1:
        return matchers[0]
    return lambda event: any(m(event) for m in matchers)
