"""Runs in weave 0.54.0's own venv (never the project's): RemoteHTTPTraceServer.call_stats against
the live server, as a Weave user's code calls it.

Argument (JSON): {"base_url", "api_key", "requests": [{"name", "form", "body"}]}, where `form` is
- "typed_dict": the body as the `CallStatsParams` TypedDict of weave's own SDK, only the fields
  the caller sets;
- "pydantic": the body as a Pydantic model built from those same Weave types, in which every
  field the caller leaves unset is None, at every depth. The binding dumps a Pydantic request
  with `model_dump()` (weave.trace_server_bindings.http_utils.as_params), so those fields reach
  the server as JSON nulls, as issue 14 saw them.
Prints one JSON document: per request, whether the call succeeded, the error if not, the paths
the binding sent as null, and the `CallStatsResponse` it parsed.
"""

import collections.abc
import json
import sys
import typing
from typing import NotRequired, Required, get_args, get_origin

import pydantic
from typing_extensions import get_type_hints, is_typeddict  # knows the SDK's typing_extensions TypedDicts
from weave.trace_server_bindings.http_utils import as_params
from weave.trace_server_bindings.remote_http_trace_server import RemoteHTTPTraceServer
from weave.vendor.weave_server_sdk.types.call_stats_params import CallStatsParams
from weave.vendor.weave_server_sdk.types.call_stats_response import CallStatsResponse

_MODELS: dict[type, type[pydantic.BaseModel]] = {}


def _as_pydantic(annotation):
    """Weave's request TypedDicts as Pydantic models (a list wherever Weave takes any iterable)."""
    origin = get_origin(annotation)
    if is_typeddict(annotation):
        return model_of(annotation)
    if origin in (Required, NotRequired, typing.Annotated):
        return _as_pydantic(get_args(annotation)[0])
    if origin is typing.Union or str(origin) == "types.UnionType":
        return typing.Union[tuple(_as_pydantic(arg) for arg in get_args(annotation))]  # noqa: UP007
    if origin is typing.Literal or origin is None:
        return annotation
    arguments = get_args(annotation)
    if len(arguments) == 1 and origin is not type:
        # list, List, Iterable, SequenceNotStr: a list of the converted item type.
        if isinstance(origin, type) and issubclass(origin, (str, bytes)):
            return annotation
        return list[_as_pydantic(arguments[0])]
    if origin in (collections.abc.Mapping, dict):
        return annotation
    return annotation


def model_of(typed_dict) -> type[pydantic.BaseModel]:
    if typed_dict not in _MODELS:
        fields = {}
        for key, annotation in get_type_hints(typed_dict, include_extras=True).items():
            converted = _as_pydantic(annotation)
            if key in typed_dict.__required_keys__:
                fields[key] = (converted, ...)
            else:
                fields[key] = (typing.Optional[converted], None)  # noqa: UP045
        _MODELS[typed_dict] = pydantic.create_model(typed_dict.__name__ + "Model", **fields)
    return _MODELS[typed_dict]


def null_paths(value, path="") -> list[str]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in null_paths(item, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in null_paths(item, f"{path}[{index}]")]
    return [path] if value is None else []


def main() -> None:
    argument = json.loads(sys.argv[1])
    server = RemoteHTTPTraceServer(argument["base_url"])
    server.set_auth(("api", argument["api_key"]))  # HTTP Basic, user "api", as Weave authenticates
    results = {}
    for request in argument["requests"]:
        if request["form"] == "pydantic":
            req = model_of(CallStatsParams).model_validate(request["body"])
        else:
            req = request["body"]
        outcome = {"form": request["form"], "sent_nulls": null_paths(dict(as_params(req)))}
        try:
            response = server.call_stats(req)
        except Exception as error:  # the client's own exception, reported to the test as it came
            outcome.update(ok=False, error=f"{type(error).__name__}: {error}"[:3000])
        else:
            outcome.update(ok=isinstance(response, CallStatsResponse), parsed_type=type(response).__name__,
                           response=response.model_dump(mode="json"))
        results[request["name"]] = outcome
    print(json.dumps(results))


if __name__ == "__main__":
    main()
