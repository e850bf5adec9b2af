"""Middleware of every request.

Server-Timing: every response says how long the server spent on it (`app;dur=<ms>`), so
clients, load tests and benchmarks read server time without network noise."""

import itertools
import time
import zoneinfo

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.utils import timezone, translation

from portal.selectors import member_of


class ServerTimingMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        response["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.3f}"
        return response


class StreamUnderASGI:
    """Under ASGI (`make serve-prod`: uvicorn workers), Django collects a StreamingHttpResponse's
    *sync* iterator into one list before it sends a byte (django/http/response.py, `__aiter__`):
    a large CSV export (the usage explorer's, Venice's) would sit whole in memory. This hands such
    an iterator to the server in chunks, each pulled through sync_to_async in the thread the view
    ran in (so with its database connection), so it streams under both servers. Under WSGI
    (runserver, the test client) nothing changes."""

    CHUNK_PARTS = 256

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if isinstance(request, ASGIRequest) and response.streaming and not response.is_async:
            response.streaming_content = _pulled_in_chunks(response.streaming_content, self.CHUNK_PARTS)
        return response


async def _pulled_in_chunks(iterable, size: int):
    iterator = iter(iterable)
    take = sync_to_async(lambda: list(itertools.islice(iterator, size)), thread_sensitive=True)
    while chunk := await take():
        for part in chunk:
            yield part


# Where the APIs live (portal/urls.py): Weave's /calls/ and the gateway's /v1/ have no /api/ prefix.
API_PATH_PREFIXES = ("/api/", "/calls/", "/v1/")


class PortalMemberMiddleware:
    """For a logged-in session: the member it acts as (the organization the switcher chose, kept in
    the session), that member's language when they set one, and the clock pages are shown in.

    Times are shown in the organization's zone; a viewer who switched to their own zone (the
    browser's, sent in the `viewer_tz` cookie) sees that one instead. Requests with no session user
    (API keys, anonymous) pay nothing here."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(API_PATH_PREFIXES):
            # The APIs speak their vendors' dialects, messages included: English whatever the
            # browser prefers (LocaleMiddleware would otherwise translate DRF's messages).
            translation.activate(settings.LANGUAGE_CODE)
            request.LANGUAGE_CODE = settings.LANGUAGE_CODE
            return self.get_response(request)
        member = None
        if request.user.is_authenticated:
            member = member_of(request.user, request.session.get(settings.SESSION_ORGANIZATION_KEY))
        request.portal_member = member
        if member is not None:
            if member.language:
                translation.activate(member.language)
                request.LANGUAGE_CODE = translation.get_language()
            timezone.activate(viewing_zone(request, member.organization))
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


def viewing_zone(request, organization) -> zoneinfo.ZoneInfo:
    """The organization's zone, or the viewer's own when they chose it and their browser's is valid."""
    if request.session.get("portal_zone") == "viewer":
        try:
            return zoneinfo.ZoneInfo(request.COOKIES.get("viewer_tz", ""))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return organization.zone
