"""The one body parser of the API: JSON, as I-JSON (RFC 7493) narrows it.

Python's json module accepts a lone UTF-16 surrogate escape ("\\ud969") and hands back a str
that no UTF-8 encoder takes: stored or looked up, it was a 500 deep in the database driver
(found by tests/fuzz in an ingested event's `model`). DRF's CharField already refuses such
strings, but bodies also carry values no CharField judges (ingested events, policy documents),
so the parser refuses them once for every endpoint, as the malformed JSON they are: a 400 in
the dialect's own shape, like any other JSON parse error."""

import json

from rest_framework import parsers
from rest_framework.exceptions import ParseError

__all__ = ["JSONParser"]


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        try:
            # One C-speed pass over every string; only a lone surrogate fails to encode.
            json.dumps(data, ensure_ascii=False, check_circular=False).encode()
        except UnicodeEncodeError as error:
            raise ParseError("JSON parse error - a string holds a lone UTF-16 surrogate "
                             f"({error.object[error.start:error.end]!a}), which is not Unicode text") from error
        return data
