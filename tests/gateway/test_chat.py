"""A customer's application calls the gateway with the official `openai` client (API.md §12): it
gets OpenAI's own formats back, the provider gets the upstream's key, and every call is metered
with the provider's usage."""

from decimal import Decimal

import httpx
import openai
import pytest

from bench.standin_provider import cache_writes_for, usage_for
from tests.gateway.conftest import wait_for_events

HELLO = [{"role": "user", "content": "Say hello to the gateway please"}]


def test_a_plain_completion_is_openais_format_and_metered_with_the_providers_usage(gw):
    raw = gw.client().chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO, max_tokens=50)
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]
    assert completion.id == f"chatcmpl-{request_id}"
    assert completion.object == "chat.completion" and completion.model == "gpt-test"
    assert completion.choices[0].message.content == " ".join(f"w{i}" for i in range(12))
    prompt, completion_tokens, _cached = usage_for({"messages": HELLO, "max_tokens": 50})
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, completion_tokens)

    (event,) = wait_for_events(1, request_id=request_id)
    assert (event.prompt_tokens, event.completion_tokens, event.cached_tokens) == (prompt, completion_tokens, 0)
    assert event.status_code == 200 and event.error_type is None and event.key_id == gw.key.pk
    assert event.model.code == "gpt-test" and event.latency_ms >= 0
    assert event.input_chars == len(HELLO[0]["content"])
    assert event.output_chars == len(completion.choices[0].message.content)
    # 2 per million prompt tokens, 8 per million completion tokens (the model's CNY prices).
    assert event.cost == (Decimal(prompt) * 2 + Decimal(completion_tokens) * 8) / 1_000_000


def test_cached_tokens_are_metered_from_prompt_tokens_details(gw):
    messages = [{"role": "user", "content": "one two three four five six #cached"}]
    raw = gw.client().chat.completions.with_raw_response.create(model="gpt-test", messages=messages)
    completion = raw.parse()
    assert completion.usage.prompt_tokens_details.cached_tokens > 0
    (event,) = wait_for_events(1, request_id=raw.headers["x-request-id"])
    assert event.cached_tokens == completion.usage.prompt_tokens_details.cached_tokens


def test_a_stream_passes_chunks_in_order_and_ends_with_the_usage_chunk(gw):
    stream = gw.client().chat.completions.create(model="gpt-test", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True})
    chunks = list(stream)
    ids = {chunk.id for chunk in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == " ".join(f"w{i}" for i in range(12))
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert all(chunk.usage is None for chunk in chunks[:-1])

    request_id = chunks[0].id.removeprefix("chatcmpl-")
    (event,) = wait_for_events(1, request_id=request_id)
    assert (event.prompt_tokens, event.completion_tokens) == (chunks[-1].usage.prompt_tokens, 12)
    assert event.output_chars == len(text) and event.status_code == 200


def test_a_stream_without_include_usage_shows_no_usage_but_is_still_metered(gw):
    chunks = list(gw.client().chat.completions.create(model="gpt-test", messages=HELLO, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)
    (event,) = wait_for_events(1, request_id=chunks[0].id.removeprefix("chatcmpl-"))
    assert event.completion_tokens == 12 and event.prompt_tokens == usage_for({"messages": HELLO})[0]


def test_chunks_reach_the_client_as_the_provider_sends_them(gw):
    # 12 content chunks 150 ms apart: the first must arrive long before the last is sent.
    import time

    started = time.perf_counter()
    stream = gw.client().chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "slowly #slow=150"}], stream=True)
    arrivals = [time.perf_counter() - started for _chunk in stream]
    assert arrivals[1] < 0.8 and arrivals[-1] > 1.5


def test_the_provider_gets_the_upstreams_key_never_the_customers(gw):
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    list(gw.client().chat.completions.create(model="gpt-test", messages=HELLO, stream=True))
    seen = gw.provider.app.seen
    assert len(seen) == 2
    assert all(call["authorization"] == "Bearer sk-upstream-provider-key-0000SECRET" for call in seen)
    assert all(gw.secret not in call["authorization"] for call in seen)


def test_a_flaky_provider_is_retried_and_the_caller_never_knows(gw):
    completion = gw.client().chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "first attempt fails #flaky"}])
    assert completion.choices[0].finish_reason == "stop"
    assert len(gw.provider.app.seen) == 2  # one 500, one retry


def test_a_client_that_leaves_mid_stream_still_gets_the_call_metered(gw):
    messages = [{"role": "user", "content": "a long answer #slow=100"}]
    request = {"model": "gpt-test", "messages": messages, "stream": True}
    with httpx.Client(timeout=10) as http, http.stream(
            "POST", f"{gw.gateway.base_url}/chat/completions", json=request,
            headers={"authorization": f"Bearer {gw.secret}"}) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        received = [next(lines) for _ in range(3)]
        assert received[0].startswith("data: ")
    # The connection is closed after two chunks; the provider's stream takes ~1.3 s more.
    (event,) = wait_for_events(1, timeout=8, request_id=request_id)
    assert event.completion_tokens == 12 and event.prompt_tokens == usage_for({"messages": messages})[0]
    assert event.status_code == 200 and event.error_type is None


def test_models_lists_what_this_key_may_call(gw):
    from billing.models import Model
    from keys import services
    from portal.services import SYSTEM
    from tests import factories

    factories.make_model("gpt-other")
    services.create_upstream(actor=SYSTEM, name="second", base_url=gw.provider.base_url, api_key="sk-x",
                             model_codes=["gpt-other"])
    Model.objects.create(code="not-served", name="Not served", provider="Test")
    _narrow, narrow_secret = factories.make_inference_key(gw.world.research, name="narrow",
                                                          models_allowed=["gpt-other"])
    import time

    time.sleep(2.2)  # the routing table is refreshed every 2 s
    listed = gw.client().models.list()
    ids = sorted(model.id for model in listed.data)
    if ids == ["gpt-test"]:  # the refresh runs in the background: the next call sees it
        time.sleep(0.3)
        ids = sorted(model.id for model in gw.client().models.list().data)
    assert ids == ["gpt-other", "gpt-test"]
    assert all(model.object == "model" and model.owned_by for model in listed.data)
    assert [model.id for model in gw.client(narrow_secret).models.list().data] == ["gpt-other"]
    with pytest.raises(openai.AuthenticationError):
        gw.client("sk-" + "x" * 48).models.list()


def test_the_call_shows_on_the_customers_dashboard_within_five_seconds(gw):
    import time

    from tests.api_helpers import client_for

    dashboard = client_for(gw.world.alice)
    before = dashboard.get("/api/v1/obs/dashboard?range_days=1").json()["tech"]["total_requests"]
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    deadline = time.monotonic() + 5
    while True:
        tech = dashboard.get("/api/v1/obs/dashboard?range_days=1").json()["tech"]
        if tech["total_requests"] == before + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert tech["total_requests"] == before + 1
    assert tech["completion_tokens"] >= 12


def test_cache_writes_an_anthropic_compatible_provider_reports_are_metered(gw):
    messages = [{"role": "user", "content": "one two three four five six seven eight #cache-write"}]
    body = {"messages": messages}
    prompt, completion_tokens, _cached = usage_for(body)
    written = cache_writes_for(body)
    assert written > 0

    raw = gw.client().chat.completions.with_raw_response.create(model="gpt-test", messages=messages)
    (event,) = wait_for_events(1, request_id=raw.headers["x-request-id"])
    assert (event.prompt_tokens, event.cache_creation_tokens, event.cached_tokens) == (prompt, written, 0)
    # gpt-test has no cache-write price: writes are charged at the input price (2 per million).
    assert event.cost == (Decimal(prompt) * 2 + Decimal(completion_tokens) * 8) / 1_000_000

    chunks = list(gw.client().chat.completions.create(model="gpt-test", messages=messages, stream=True))
    (streamed,) = wait_for_events(1, request_id=chunks[0].id.removeprefix("chatcmpl-"))
    assert (streamed.prompt_tokens, streamed.cache_creation_tokens) == (prompt, written)
    assert all(chunk.usage is None for chunk in chunks)


def test_a_call_without_cache_writes_meters_none(gw):
    raw = gw.client().chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO)
    (event,) = wait_for_events(1, request_id=raw.headers["x-request-id"])
    assert event.cache_creation_tokens == 0


def test_successful_answers_carry_the_rate_limit_headers_of_the_same_window(gw):
    from tests import factories

    _key, secret = factories.make_inference_key(gw.world.research, rpm_limit=5, tpm_limit=10_000)
    client = gw.client(secret)
    first = client.chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO, max_tokens=20)
    second = client.chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO, max_tokens=20)
    assert first.headers["x-ratelimit-limit-requests"] == "5"
    assert (first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]) == (
        "4", "3")
    assert first.headers["x-ratelimit-limit-tokens"] == "10000"
    # Tokens are counted at admission as the estimated prompt plus max_tokens.
    charged = 10_000 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert charged > 20 and int(second.headers["x-ratelimit-remaining-tokens"]) == 10_000 - 2 * charged
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    with httpx.Client(timeout=10) as http, http.stream(
            "POST", f"{gw.gateway.base_url}/chat/completions",
            json={"model": "gpt-test", "messages": HELLO, "stream": True, "max_tokens": 20},
            headers={"authorization": f"Bearer {secret}"}) as streamed:
        assert streamed.headers["x-ratelimit-remaining-requests"] == "2"
        streamed.read()


def test_usage_in_anthropics_own_shape_counts_cache_reads_and_writes_into_the_prompt():
    from portal.gateway.app import Usage

    usage = Usage.of({"input_tokens": 10, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 5,
                      "output_tokens": 7})
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_creation_tokens, usage.completion_tokens) == (
        45, 30, 5, 7)
    # A provider claiming more cache writes than its prompt is believed up to the prompt.
    odd = Usage.of({"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 4},
                    "cache_creation_input_tokens": 50})
    assert (odd.prompt_tokens, odd.cached_tokens, odd.cache_creation_tokens) == (10, 4, 6)
