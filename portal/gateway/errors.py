"""The gateway's refusals, in OpenAI's error shape (API.md §12):
`{"error": {"message", "type", "code", "param"}}` with the status the contract gives each code.
A refusal never names anything of another organization, nor echoes the key that was sent."""

from dataclasses import dataclass, field

import msgspec

# code -> (HTTP status, OpenAI error type)
CODES: dict[str, tuple[int, str]] = {
    "invalid_request_error": (400, "invalid_request_error"),
    "invalid_api_key": (401, "invalid_request_error"),
    "budget_exceeded": (402, "insufficient_quota"),
    "model_not_allowed": (403, "permission_error"),
    "ip_not_allowed": (403, "permission_error"),
    "model_not_found": (404, "invalid_request_error"),
    "method_not_allowed": (405, "invalid_request_error"),
    "rate_limit_exceeded": (429, "rate_limit_error"),
    "internal_error": (500, "api_error"),
    "upstream_error": (502, "api_error"),
    "upstream_timeout": (504, "api_error"),
}


@dataclass
class GatewayError(Exception):
    code: str
    message: str
    param: str | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def status(self) -> int:
        return CODES[self.code][0]

    def body(self) -> bytes:
        # A malformed request carries no code of its own in OpenAI's answers: null, as they do.
        code = None if self.code == "invalid_request_error" else self.code
        return msgspec.json.encode({"error": {"message": self.message, "type": CODES[self.code][1],
                                              "code": code, "param": self.param}})
