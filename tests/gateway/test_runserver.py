"""`python manage.py runserver` serves the gateway for development (API.md §12): Django's WSGI
stack hands `/v1/` to the same ASGI app (portal.gateway.wsgi_bridge). Driven here through
Django's test client, which is that WSGI stack."""

import json

from django.test import Client

from tests.gateway.conftest import wait_for_events

HELLO = [{"role": "user", "content": "hello over wsgi"}]


def test_the_wsgi_stack_serves_chat_streams_and_models(gw):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {gw.secret}")
    plain = client.post("/v1/chat/completions", {"model": "gpt-test", "messages": HELLO},
                        content_type="application/json")
    assert plain.status_code == 200
    body = json.loads(b"".join(plain.streaming_content))
    assert body["id"] == f"chatcmpl-{plain['x-request-id']}" and body["usage"]["completion_tokens"] == 12

    streamed = client.post("/v1/chat/completions", {"model": "gpt-test", "messages": HELLO, "stream": True},
                           content_type="application/json")
    assert streamed["content-type"].startswith("text/event-stream")
    lines = [line for line in b"".join(streamed.streaming_content).decode().split("\n\n") if line]
    assert lines[-1] == "data: [DONE]" and len(lines) == 15  # role, 12 words, finish, [DONE]

    models = client.get("/v1/models")
    assert [model["id"] for model in json.loads(b"".join(models.streaming_content))["data"]] == ["gpt-test"]
    refused = Client(HTTP_AUTHORIZATION="Bearer sk-" + "z" * 48).get("/v1/models")
    assert refused.status_code == 401
    assert json.loads(b"".join(refused.streaming_content))["error"]["code"] == "invalid_api_key"
    assert len(wait_for_events(2, key=gw.key)) == 2
