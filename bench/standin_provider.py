"""A stand-in for an OpenAI-compatible provider: a small ASGI app on loopback that answers
`/v1/chat/completions` (plain and streamed) and `/v1/models` with deterministic content and usage,
so the gateway's tests and bench/gateway.py need no real provider.

What it answers is decided by markers in the request's messages:
- `#fail`: 500 with an OpenAI-shaped error; `#flaky`: 500 on the first attempt of each distinct
  body, then success (to see the gateway retry);
- `#hang`: never answers (the gateway's timeout fires);
- `#slow=<ms>`: streams with <ms> between chunks (default 0); `#cached`: half the prompt is cached;
  `#cache-write`: a quarter of the prompt was written to the cache, reported as Anthropic-compatible
  providers do (`cache_creation_input_tokens` in usage, beside OpenAI's fields).
The completion is `COMPLETION_WORDS` words ("w0 w1 ..."), cut to max_tokens when that is smaller;
prompt_tokens is the number of whitespace-separated words of the messages plus 4 per message.
`GET /_seen` lists the Authorization header and model of every call received (what the gateway
sent), `DELETE /_seen` forgets them.

Run alone: `python -m bench.standin_provider --port 9100`.
"""

import argparse
import asyncio
import json
import re
import threading
import time

import uvicorn

COMPLETION_WORDS = 12
_SLOW = re.compile(r"#slow=(\d+)")


def _text(message) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def usage_for(body: dict) -> tuple[int, int, int]:
    """(prompt_tokens, completion_tokens, cached_tokens) the stand-in reports for `body`."""
    messages = body.get("messages") or []
    texts = [_text(message) for message in messages]
    prompt = sum(len(text.split()) for text in texts) + 4 * len(messages)
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or COMPLETION_WORDS
    completion = min(COMPLETION_WORDS, int(limit))
    cached = prompt // 2 if any("#cached" in text for text in texts) else 0
    return prompt, completion, cached


def cache_writes_for(body: dict) -> int | None:
    """The cache_creation_input_tokens the stand-in reports for `body` (None: it reports none)."""
    texts = [_text(message) for message in body.get("messages") or []]
    return usage_for(body)[0] // 4 if any("#cache-write" in text for text in texts) else None


class StandInProvider:
    def __init__(self) -> None:
        self.seen: list[dict] = []
        self._flaky_attempts: dict[bytes, int] = {}
        self._sequence = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"].rstrip("/"), scope["method"]
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/_seen":
            if method == "DELETE":
                self.seen.clear()
            return await self._json(send, 200, {"seen": self.seen})
        if path.endswith("/models"):
            return await self._json(send, 200, {"object": "list", "data": []})
        if not path.endswith("/chat/completions"):
            return await self._json(send, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        headers = dict(scope["headers"])
        body = json.loads(raw)
        self.seen.append({"authorization": headers.get(b"authorization", b"").decode(), "model": body.get("model")})
        texts = " ".join(_text(message) for message in body.get("messages") or [])
        if "#hang" in texts:
            await asyncio.sleep(3600)
        if "#fail" in texts or ("#flaky" in texts and self._first_attempt(raw)):
            return await self._json(send, 500, {"error": {"message": "the stand-in failed", "type": "server_error",
                                                          "param": None, "code": None}})
        slow = _SLOW.search(texts)
        delay = int(slow.group(1)) / 1000 if slow else 0.0
        self._sequence += 1
        if body.get("stream"):
            return await self._stream(send, body, delay)
        return await self._json(send, 200, self._completion(body))

    def _first_attempt(self, raw: bytes) -> bool:
        attempts = self._flaky_attempts.get(raw, 0)
        self._flaky_attempts[raw] = attempts + 1
        return attempts == 0

    def _ids(self, body: dict) -> dict:
        return {"id": f"chatcmpl-standin{self._sequence}", "created": int(time.time()), "model": body.get("model"),
                "system_fingerprint": "fp_standin"}

    @staticmethod
    def _usage(body: dict) -> dict:
        prompt, completion, cached = usage_for(body)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        written = cache_writes_for(body)
        if written is not None:
            usage["cache_creation_input_tokens"] = written
        return usage

    def _completion(self, body: dict) -> dict:
        _prompt, completion, _cached = usage_for(body)
        content = " ".join(f"w{i}" for i in range(completion))
        return {**self._ids(body), "object": "chat.completion", "service_tier": "default",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None,
                                                     "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": self._usage(body)}

    async def _stream(self, send, body: dict, delay: float) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        ids = {**self._ids(body), "object": "chat.completion.chunk", "service_tier": "default"}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        extra = {"usage": None} if include_usage else {}
        _prompt, completion, _cached = usage_for(body)
        deltas = [{"role": "assistant", "content": "", "refusal": None}]
        deltas += [{"content": f"w{i}" if i == 0 else f" w{i}"} for i in range(completion)]
        for delta in deltas:
            chunk = {**ids, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
                     **extra}
            await send({"type": "http.response.body", "body": _event(chunk), "more_body": True})
            if delay:
                await asyncio.sleep(delay)
        final = {**ids, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}], **extra}
        await send({"type": "http.response.body", "body": _event(final), "more_body": True})
        if include_usage:
            usage_chunk = {**ids, "choices": [], "usage": self._usage(body)}
            await send({"type": "http.response.body", "body": _event(usage_chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    @staticmethod
    async def _json(send, status: int, payload: dict) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


def _event(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


class ServedInThread:
    """An ASGI app served by uvicorn on a free loopback port in a background thread (the tests'
    stand-in provider and gateway): `base_url` once entered, stopped on exit."""

    def __init__(self, app, *, name: str, lifespan: str = "off", start_seconds: float = 10,
                 stop_seconds: float = 10) -> None:
        self.app, self.name, self.start_seconds, self.stop_seconds = app, name, start_seconds, stop_seconds
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan,
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + self.start_seconds
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.stop_seconds)


class RunningProvider(ServedInThread):
    """The stand-in in a background thread (tests): `base_url`, `app.seen`."""

    def __init__(self) -> None:
        super().__init__(StandInProvider(), name="the stand-in provider")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9100)
    arguments = parser.parse_args()
    uvicorn.run(StandInProvider(), host="127.0.0.1", port=arguments.port, log_level="warning", access_log=False,
                lifespan="off")


if __name__ == "__main__":
    main()
