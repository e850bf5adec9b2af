"""Runs in pyvenice 0.3.1's own venv (never the project's): every method of `pyvenice.Billing`,
the only part of pyvenice that reaches Venice's billing endpoint (GET /billing/usage), against the
live server.

Argument (JSON): {"base_url", "api_key", "calls": [{"name", "method", "kwargs"}]}; `method` is one of
"get_usage_pages" (get_usage(page=1..), every page, at most 50), "get_usage_csv", "get_usage_async",
"get_all_usage" and "get_usage_summary". Prints one JSON document: per call, whether it succeeded,
the error if not (a validation error of pyvenice's models is listed field by field), and the
parsed models as JSON.
"""

import asyncio
import json
import sys

import pydantic
from pyvenice import Billing, VeniceClient

MAX_PAGES = 50


def _describe(error: BaseException) -> str:
    if isinstance(error, pydantic.ValidationError):
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"[:300] for e in error.errors()]
        return f"ValidationError ({error.error_count()} errors) in {error.title}: " + "; ".join(lines[:40])
    return f"{type(error).__name__}: {error}"[:6000]


def _call(billing: Billing, method: str, kwargs: dict):
    if method == "get_usage_pages":
        pages = [billing.get_usage(page=1, **kwargs)]
        while pages[-1].pagination.get("page", 0) < pages[-1].pagination.get("total_pages", 0) <= MAX_PAGES:
            pages.append(billing.get_usage(page=len(pages) + 1, **kwargs))
        return [page.model_dump(mode="json") for page in pages]
    if method == "get_usage_csv":
        return billing.get_usage(format="csv", **kwargs)
    if method == "get_usage_async":
        return asyncio.run(billing.get_usage_async(**kwargs)).model_dump(mode="json")
    if method == "get_all_usage":
        return [entry.model_dump(mode="json") for entry in billing.get_all_usage(**kwargs)]
    if method == "get_usage_summary":
        return billing.get_usage_summary(**kwargs)
    raise ValueError(f"unknown method {method}")


def main() -> None:
    argument = json.loads(sys.argv[1])
    client = VeniceClient(api_key=argument["api_key"], base_url=argument["base_url"], max_retries=1)
    billing = Billing(client)
    results = {}
    for call in argument["calls"]:
        try:
            value = _call(billing, call["method"], call["kwargs"])
        except Exception as error:  # the client's own exception, reported to the test as it came
            results[call["name"]] = {"ok": False, "error": _describe(error)}
        else:
            results[call["name"]] = {"ok": True, "value": value}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
