"""Each of API.md §12's refusals, in the order the checks run, in OpenAI's error shape; a refused
call never reaches the provider, and a refusal of a known key and model is metered too."""

import json
import socket
import time
from datetime import timedelta
from decimal import Decimal

import httpx
import openai
import pytest

from tests.gateway.conftest import wait_for_events

HELLO = [{"role": "user", "content": "hello"}]


def _refusal(call) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as raised:
        call()
    return raised.value


def _chat(client, **overrides):
    return lambda: client.chat.completions.create(**{"model": "gpt-test", "messages": HELLO, **overrides})


def test_the_error_shape_is_openais(gw):
    answer = httpx.post(f"{gw.gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": HELLO},
                        headers={"authorization": "Bearer sk-" + "n" * 48})
    assert answer.status_code == 401
    assert answer.json() == {"error": {"message": answer.json()["error"]["message"], "type": "invalid_request_error",
                                       "code": "invalid_api_key", "param": None}}
    assert "n" * 48 not in answer.text  # the key is never echoed
    assert answer.headers["x-request-id"]


@pytest.mark.parametrize("secret", [
    pytest.param("sk-" + "u" * 48, id="unknown"),
    pytest.param("not-a-key", id="malformed"),
    pytest.param("", id="missing"),
])
def test_an_unknown_key_is_401(gw, secret):
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    answer = httpx.post(f"{gw.gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": HELLO},
                        headers=headers)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    assert gw.provider.app.seen == []


def test_a_disabled_revoked_or_rotated_out_key_stops_at_once(gw):
    from keys import services
    from portal.services import SYSTEM

    client = gw.client()
    _chat(client)()
    services.disable_inference_key(actor=SYSTEM, key=gw.key)
    assert _refusal(_chat(client)).code == "invalid_api_key"
    services.enable_inference_key(actor=SYSTEM, key=gw.key)
    _chat(client)()
    services.rotate_inference_key(actor=SYSTEM, key=gw.key, grace=timedelta(0))
    assert _refusal(_chat(client)).status_code == 401
    assert len(gw.provider.app.seen) == 2


def test_a_key_used_from_outside_its_networks_is_403(gw):
    from tests import factories

    _key, secret = factories.make_inference_key(gw.world.research, allowed_ips=["10.0.0.0/8"])
    refused = _refusal(_chat(gw.client(secret)))
    assert (refused.status_code, refused.code) == (403, "ip_not_allowed")
    _key, loopback = factories.make_inference_key(gw.world.research, allowed_ips=["127.0.0.0/8"])
    _chat(gw.client(loopback))()
    assert len(gw.provider.app.seen) == 1


def test_an_unknown_model_is_404(gw):
    refused = _refusal(_chat(gw.client(), model="gpt-nonexistent"))
    assert (refused.status_code, refused.code, refused.param) == (404, "model_not_found", "model")
    assert gw.provider.app.seen == []


def test_a_model_outside_the_keys_the_departments_or_the_plans_list_is_403(gw):
    from billing.services import subscribe
    from portal.services import SYSTEM
    from tests import factories

    factories.make_model("gpt-other")
    _key, narrow = factories.make_inference_key(gw.world.research, models_allowed=["gpt-other"])
    refused = _refusal(_chat(gw.client(narrow)))
    assert (refused.status_code, refused.code) == (403, "model_not_allowed")

    department = factories.make_department(gw.world.acme, "Narrow", allowed_models=["gpt-other"])
    _key, in_narrow_department = factories.make_inference_key(department)
    assert _refusal(_chat(gw.client(in_narrow_department))).code == "model_not_allowed"

    plan = factories.make_plan(models_allowed=["gpt-other"])
    subscribe(actor=SYSTEM, organization=gw.world.acme, plan=plan)
    _key, under_plan = factories.make_inference_key(gw.world.research)
    assert _refusal(_chat(gw.client(under_plan))).code == "model_not_allowed"
    assert gw.provider.app.seen == []
    events = wait_for_events(3, status_code=403)
    assert {event.error_type for event in events} == {"model_not_allowed"}


def test_requests_over_the_keys_rpm_are_429_with_openais_headers(gw):
    from tests import factories

    _key, secret = factories.make_inference_key(gw.world.research, rpm_limit=2)
    client = gw.client(secret)
    _chat(client)()
    _chat(client)()
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO)
    refused = raised.value
    assert refused.code == "rate_limit_exceeded"
    headers = refused.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "2" and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert len(gw.provider.app.seen) == 2  # the third never reached the provider


def test_requests_over_the_departments_rpm_are_429_whichever_key_makes_them(gw):
    from tests import factories

    department = factories.make_department(gw.world.acme, "Limited", rpm_limit=3)
    secrets = [factories.make_inference_key(department)[1] for _ in range(2)]
    statuses = []
    for index in range(5):
        try:
            _chat(gw.client(secrets[index % 2]))()
            statuses.append(200)
        except openai.RateLimitError as refused:
            statuses.append(refused.status_code)
            assert refused.response.headers["x-ratelimit-limit-requests"] == "3"
    assert statuses == [200, 200, 200, 429, 429]
    assert len(gw.provider.app.seen) == 3


def test_tokens_over_the_plans_tpm_are_429(gw):
    from billing.services import subscribe
    from portal.services import SYSTEM
    from tests import factories

    subscribe(actor=SYSTEM, organization=gw.world.acme, plan=factories.make_plan(rpm_limit=1000, tpm_limit=100))
    client = gw.client()
    _chat(client, max_tokens=60)()
    refused = _refusal(_chat(client, max_tokens=60))
    assert (refused.status_code, refused.code) == (429, "rate_limit_exceeded")
    assert refused.response.headers["x-ratelimit-limit-tokens"] == "100"
    assert len(gw.provider.app.seen) == 1


def test_an_exhausted_hard_budget_is_402(gw):
    from billing.budgets import create_budget
    from portal.services import SYSTEM

    create_budget(actor=SYSTEM, organization=gw.world.acme, scope="key", key=gw.key, amount=Decimal("0.00001"),
                  hard_limit=True)
    time.sleep(5.1)  # the key's facts (its hard budgets) are remembered for 5 s
    refused = _refusal(_chat(gw.client()))
    assert (refused.status_code, refused.code) == (402, "budget_exceeded")
    assert gw.provider.app.seen == []


def test_a_failing_provider_is_502_after_the_retries(gw):
    refused = _refusal(_chat(gw.client(), messages=[{"role": "user", "content": "break #fail"}]))
    assert (refused.status_code, refused.code) == (502, "upstream_error")
    assert len(gw.provider.app.seen) == 3  # the first attempt and max_retries=2
    (event,) = wait_for_events(1, status_code=502)
    assert event.error_type == "upstream_error" and event.completion_tokens == 0


def test_a_provider_that_hangs_is_504_after_the_upstreams_timeout(gw):
    started = time.monotonic()
    refused = _refusal(_chat(gw.client(), messages=[{"role": "user", "content": "wait #hang"}]))
    assert (refused.status_code, refused.code) == (504, "upstream_timeout")
    assert 1.9 < time.monotonic() - started < 6
    assert len(gw.provider.app.seen) == 1  # a timeout is not retried
    (event,) = wait_for_events(1, status_code=504)
    assert event.error_type == "upstream_timeout"


def test_a_stream_that_fails_before_it_starts_is_a_plain_error(gw):
    with pytest.raises(openai.InternalServerError) as raised:
        list(gw.client().chat.completions.create(model="gpt-test", stream=True,
                                                 messages=[{"role": "user", "content": "#fail"}]))
    assert raised.value.status_code == 502


@pytest.mark.parametrize(("body", "param"), [
    pytest.param({"messages": HELLO}, "model", id="no-model"),
    pytest.param({"model": "gpt-test", "messages": []}, "messages", id="no-messages"),
    pytest.param({"model": "gpt-test", "messages": HELLO, "max_tokens": 0}, "max_tokens", id="zero-max-tokens"),
    pytest.param({"model": "gpt-test", "messages": HELLO, "stream": "yes"}, "stream", id="stream-not-bool"),
])
def test_a_malformed_request_is_400_naming_the_parameter(gw, body, param):
    answer = httpx.post(f"{gw.gateway.base_url}/chat/completions", json=body,
                        headers={"authorization": f"Bearer {gw.secret}"})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param and answer.json()["error"]["type"] == "invalid_request_error"
    assert gw.provider.app.seen == []


def test_an_unreachable_provider_is_502_after_the_retries(gw):
    from keys import services
    from portal.services import SYSTEM
    from tests import factories

    factories.make_model("gpt-gone", cny=("2", "1", "8", "0", "0"))
    with socket.socket() as closed:  # a port nobody listens on once this socket is closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    services.create_upstream(actor=SYSTEM, name="gone", base_url=f"http://127.0.0.1:{port}/v1",
                             api_key="sk-upstream-gone-0000SECRET", model_codes=["gpt-gone"], timeout_seconds=2,
                             max_retries=2)
    started = time.monotonic()
    refused = _refusal(_chat(gw.client(), model="gpt-gone"))
    assert (refused.status_code, refused.code) == (502, "upstream_error")
    assert time.monotonic() - started < 2  # refused connections are retried after short backoffs, not timed out
    (event,) = wait_for_events(1, status_code=502)
    assert event.error_type == "upstream_error" and event.model.code == "gpt-gone"


def test_a_stream_whose_provider_stops_mid_way_ends_with_an_error_event_and_is_metered_504(gw):
    body = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "then nothing #slow=5000"}]}
    with httpx.stream("POST", f"{gw.gateway.base_url}/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {gw.secret}"}) as answer:
        assert answer.status_code == 200
        events = [line for line in answer.iter_lines() if line.startswith("data: ")]
    assert '"role":"assistant"' in events[0]  # what the provider sent before it went quiet passed through
    assert json.loads(events[-1].removeprefix("data: "))["error"]["code"] == "upstream_timeout"
    (event,) = wait_for_events(1, status_code=504)
    # No usage came: the estimated prompt is billed, and one token per content piece received (none).
    assert event.error_type == "upstream_timeout" and event.prompt_tokens > 0 and event.completion_tokens == 0


def test_tokens_the_provider_reports_beyond_the_estimate_count_against_the_tpm(gw):
    from tests import factories

    # Without max_tokens admission counts the estimated prompt only: "hello" is 3 + 4 + 3 = 10
    # tokens. The stand-in reports 5 + 12 = 17, and the hand-over adds the 7 more. So the window
    # holds 17, then 34 after the second call, and the third (34 + 10 > 30) is refused; counting
    # estimates only (10, 20, then 30 ≤ 30) would have let it through.
    _key, secret = factories.make_inference_key(gw.world.research, tpm_limit=30)
    client = gw.client(secret)
    _chat(client)()
    _chat(client)()
    refused = _refusal(_chat(client))
    assert (refused.status_code, refused.code) == (429, "rate_limit_exceeded")
    assert len(gw.provider.app.seen) == 2
