"""The gateway never logs a prompt, a completion or a key (API.md §12): calls that succeed, stream,
fail and are refused, with secret-looking text in the prompt, and every log line captured from
every logger (the gateway's, Django's, httpx's, uvicorn's), at DEBUG, is searched for it."""

import logging

import httpx
import openai
import pytest

from tests.gateway.conftest import SECRET_PROMPT, wait_for_events

COMPLETION = " ".join(f"w{i}" for i in range(12))


def test_no_log_line_holds_a_prompt_a_completion_or_a_key(gw, caplog):
    caplog.set_level(logging.DEBUG)
    client = gw.client()
    messages = [{"role": "user", "content": SECRET_PROMPT}]
    client.chat.completions.create(model="gpt-test", messages=messages)
    list(client.chat.completions.create(model="gpt-test", messages=messages, stream=True))
    for marker in ("#fail", "#hang"):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="gpt-test", messages=[{"role": "user",
                                                                        "content": f"{SECRET_PROMPT} {marker}"}])
    with pytest.raises(openai.AuthenticationError):
        gw.client(gw.secret[:-4] + "abcd").chat.completions.create(model="gpt-test", messages=messages)
    httpx.post(f"{gw.gateway.base_url}/chat/completions", content=b"{not json " + SECRET_PROMPT.encode(),
               headers={"authorization": f"Bearer {gw.secret}"})
    wait_for_events(4, key=gw.key)

    # The client library's own debug lines (in this test process) show what it sends; they are
    # not the gateway's.
    lines = [record.getMessage() + " " + str(record.args or "") + " " + (record.exc_text or "")
             for record in caplog.records if not record.name.startswith("openai")]
    assert lines, "nothing was logged at all: the capture is not working"
    secrets = [SECRET_PROMPT, "ZEBRA-7731", COMPLETION, gw.secret, gw.secret[3:20], gw.secret[-20:],
               "sk-upstream-provider-key-0000SECRET", "provider-key-0000SECRET"]
    leaks = [(secret, line) for line in lines for secret in secrets if secret in line]
    assert leaks == []
