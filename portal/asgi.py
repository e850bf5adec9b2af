"""The ASGI entry point (`make serve-prod`: gunicorn with uvicorn workers). The gateway's `/v1/`
paths go to its own ASGI app (portal.gateway.app), everything else to Django; the lifespan
events are the gateway's (its pooled client, its meter's flusher, draining it on shutdown)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_application = get_asgi_application()

# After Django is set up: the gateway's modules import models.
from portal.gateway.app import application as gateway_application  # noqa: E402


async def application(scope, receive, send):
    if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"].startswith("/v1/")):
        return await gateway_application(scope, receive, send)
    return await django_application(scope, receive, send)
