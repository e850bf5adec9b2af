"""The compiled fast path (usage.wire) never accepts what the per-field checks reject, and hands
ingest_events exactly the events they would: so the API's 422s stay worded by the general path."""

import json
from datetime import UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usage.services import _validate_shapes
from usage.wire import shaped_events

KEY = "3f2a7c1e-9b4d-4c8a-8f00-0123456789ab"


def _event(**fields):
    event = {"request_id": "r1", "timestamp": "2026-03-01T10:00:00+08:00", "key_id": KEY, "model": "qwen-plus",
             "prompt_tokens": 1000, "completion_tokens": 500, "latency_ms": 800, "status_code": 200}
    event.update(fields)
    return event


def _body(*events) -> bytes:
    return json.dumps({"events": list(events)}).encode()


@pytest.mark.parametrize("event", [
    _event(),
    _event(timestamp=1767225600, cached_tokens=1000, error_type=None, conversation_id="c" * 128),
    _event(timestamp="2026-03-01T02:00:00Z", status_code=503, error_type="overloaded", trace_id="t", op_name="x"),
    _event(cached_tokens=300, cache_creation_tokens=700),
    {k: v for k, v in _event().items() if k not in ("prompt_tokens", "completion_tokens")},
], ids=["plain", "unix-seconds-and-limits", "zulu", "cache-reads-and-writes-fill-the-prompt",
        "counts-default-to-zero"])
def test_a_good_batch_is_shaped_as_the_per_field_checks_shape_it(event):
    shaped = shaped_events(_body(event, dict(event, request_id="r2")))
    clean, errors = _validate_shapes([event, dict(event, request_id="r2")])
    assert errors == [] and shaped == clean
    assert shaped[0]["timestamp"].tzinfo is UTC


@pytest.mark.parametrize("override", [
    {"prompt_tokens": -1}, {"prompt_tokens": "12"}, {"completion_tokens": True}, {"prompt_tokens": 1.0},
    {"prompt_tokens": None}, {"cached_tokens": 2000}, {"cache_creation_tokens": 1001},
    {"cached_tokens": 1, "cache_creation_tokens": 1000}, {"cache_creation_tokens": None},
    {"cache_creation_tokens": -3}, {"timestamp": "2026-03-01T10:00:00"},
    {"timestamp": "yesterday"}, {"timestamp": 1.5}, {"key_id": "not-a-uuid"}, {"key_id": ["a"]},
    {"model": 5}, {"status_code": 99}, {"status_code": 600}, {"request_id": "x" * 129}, {"request_id": ""},
    {"trace_id": 5}, {"trace_id": "t" * 129}, {"surprise": 1}, {"latency_ms": None},
], ids=str)
def test_anything_the_per_field_checks_reject_is_left_to_them(override):
    bad = _event(**override)
    assert _validate_shapes([bad])[1], "the case must be invalid for the general path too"
    assert shaped_events(_body(_event(request_id="good"), bad)) is None


@pytest.mark.parametrize("body", [b"", b"[]", b"{}", b'{"events": []}', b'{"events": "x"}',
                                  b'{"events": [], "extra": 1}', b"not json", _body(*[_event()] * 1001)],
                         ids=["empty", "array", "no-events", "no-event", "not-a-list", "extra-field", "garbage",
                              "too-many"])
def test_a_malformed_body_is_left_to_the_general_path(body):
    assert shaped_events(body) is None


# Small counts too, around the prompt's 1000, where cache reads and writes together meet it.
_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**40), st.integers(0, 1200), st.floats(allow_nan=False),
                    st.text(max_size=140), st.sampled_from([KEY, "2026-03-01T10:00:00+00:00", "2026-03-01T10:00:00",
                                                            "x" * 128, "x" * 129]))
_fields = st.sampled_from(["request_id", "timestamp", "key_id", "model", "prompt_tokens", "cached_tokens",
                           "cache_creation_tokens", "latency_ms", "status_code", "error_type", "trace_id", "bogus"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_fields, _values, max_size=3), st.sets(_fields, max_size=2))
def test_the_fast_path_accepts_only_what_the_per_field_checks_accept(overrides, removed):
    event = {k: v for k, v in _event(**overrides).items() if k not in removed}
    shaped = shaped_events(_body(event))
    clean, errors = _validate_shapes([event])
    if shaped is not None:
        assert errors == [] and shaped == clean
