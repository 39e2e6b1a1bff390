"""EventBridge pattern matching: every supported matcher, arrays, nesting, errors."""

from __future__ import annotations

import pytest

from firelake.grammars.patterns import PatternError, compile_pattern, compile_patterns

EVENT = {
    "event_type": "start",
    "device": "mobile",
    "bitrate_kbps": 1600,
    "tags": ["live", "sport"],
    "detail": {"country": "FI", "score": 7.5},
    "page": "/ohjelmat/12",
}


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ({"event_type": ["start", "stop"]}, True),
        ({"event_type": ["pause"]}, False),
        ({"bitrate_kbps": [1600]}, True),
        ({"bitrate_kbps": ["1600"]}, False),  # numbers and strings never match each other
        ({"page": [{"prefix": "/ohjelmat/"}]}, True),
        ({"page": [{"suffix": "/13"}]}, False),
        ({"device": [{"equals-ignore-case": "MOBILE"}]}, True),
        ({"page": [{"wildcard": "/ohj*/1?"}]}, False),  # only * is special
        ({"page": [{"wildcard": "/ohj*/12"}]}, True),
        ({"bitrate_kbps": [{"numeric": [">", 800, "<=", 1600]}]}, True),
        ({"bitrate_kbps": [{"numeric": [">", 1600]}]}, False),
        ({"device": [{"exists": True}]}, True),
        ({"referrer": [{"exists": False}]}, True),
        ({"referrer": [{"exists": True}]}, False),
        ({"device": [{"anything-but": ["tv", "desktop"]}]}, True),
        ({"device": [{"anything-but": "mobile"}]}, False),
        ({"device": [{"anything-but": {"prefix": "mob"}}]}, False),
        ({"referrer": [{"anything-but": "x"}]}, False),  # a missing field matches nothing
        ({"tags": ["sport"]}, True),  # arrays: any element
        ({"detail": {"country": ["FI"], "score": [{"numeric": [">=", 7]}]}}, True),
        ({"detail": {"country": ["SE"]}}, False),
        ({"$or": [{"device": ["tv"]}, {"event_type": ["start"]}]}, True),
        ({"$or": [{"device": ["tv"]}, {"event_type": ["stop"]}]}, False),
        ({"event_type": ["start"], "device": ["tv"]}, False),  # every field must match
    ],
)
def test_matchers(pattern: dict, matches: bool) -> None:
    assert compile_pattern(pattern)(EVENT) is matches


def test_any_of_several_patterns_matches_and_none_means_no_filter() -> None:
    matcher = compile_patterns([{"device": ["tv"]}, {"event_type": ["start"]}])
    assert matcher is not None and matcher(EVENT)
    assert compile_patterns([]) is None


@pytest.mark.parametrize(
    ("pattern", "where"),
    [
        ({"device": "tv"}, "filters[0].device"),
        ({"device": [{"numeric": ["~", 1]}]}, "filters[0].device"),
        ({"device": [{"nope": 1}]}, "filters[0].device"),
        ({}, "filters[0]"),
        ({"$or": [{"a": [1]}]}, "filters[0].$or"),
        ({"d": {"e": [{"prefix": 1}]}}, "filters[0].d.e"),
    ],
)
def test_malformed_patterns_name_their_path(pattern: dict, where: str) -> None:
    with pytest.raises(PatternError) as caught:
        compile_patterns([pattern])
    assert caught.value.path == where
