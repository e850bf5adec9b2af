"""Runs in venice-py 2.9.0's own venv (never the project's): every method of `client.billing`,
the only part of venice-py that reaches Venice's billing endpoints, against the live server.

Argument (JSON): {"base_url", "calls": [{"name", "api_key", "method", "kwargs"}]}; `method` is one of
- "get_usage_history_pages": get_usage_history(**kwargs), then get_usage_history(cursor=...) for
  every nextCursor, as the method's own docstring walks it (at most 50 pages);
- "iter_usage_history", "iter_usage_history_csv": the client's own walks, every item;
- "get_balance", "get_usage_analytics": one call.
Prints one JSON document: per call, whether it succeeded, the error if not (a validation error
of the client's models is listed field by field), and the parsed models as JSON.
"""

import asyncio
import json
import sys
import warnings

import pydantic
from venice_ai import VeniceClient

MAX_PAGES = 50


def _dump(model) -> dict:
    return model.model_dump(mode="json", by_alias=True)


def _describe(error: BaseException) -> str:
    if isinstance(error, pydantic.ValidationError):
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"[:300] for e in error.errors()]
        return f"ValidationError ({error.error_count()} errors) in {error.title}: " + "; ".join(lines[:40])
    cause = error.__cause__ or error.__context__
    text = f"{type(error).__name__}: {error}"
    for attribute in ("status_code", "body"):
        if getattr(error, attribute, None) is not None:
            text += f" [{attribute}={getattr(error, attribute)!r}]"
    if isinstance(cause, pydantic.ValidationError):
        text += " caused by " + _describe(cause)
    return text[:6000]


async def _call(client: VeniceClient, method: str, kwargs: dict):
    billing = client.billing
    if method == "get_usage_history_pages":
        pages = [await billing.get_usage_history(**kwargs)]
        while pages[-1].nextCursor and len(pages) < MAX_PAGES:
            pages.append(await billing.get_usage_history(cursor=pages[-1].nextCursor))
        return [_dump(page) for page in pages]
    if method == "iter_usage_history":
        return [_dump(entry) async for entry in billing.iter_usage_history(**kwargs)]
    if method == "iter_usage_history_csv":
        return [{"text": page.text, "nextCursor": page.nextCursor, "filename": page.filename}
                async for page in billing.iter_usage_history_csv(**kwargs)]
    if method == "get_balance":
        return _dump(await billing.get_balance())
    if method == "get_usage_analytics":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "beta endpoint": said once, known
            return _dump(await billing.get_usage_analytics(**kwargs))
    raise ValueError(f"unknown method {method}")


async def main() -> None:
    argument = json.loads(sys.argv[1])
    results = {}
    for call in argument["calls"]:
        async with VeniceClient(api_key=call["api_key"], base_url=argument["base_url"], max_retries=0) as client:
            try:
                value = await _call(client, call["method"], call["kwargs"])
            except Exception as error:  # the client's own exception, reported to the test as it came
                results[call["name"]] = {"ok": False, "error": _describe(error)}
            else:
                results[call["name"]] = {"ok": True, "value": value}
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
