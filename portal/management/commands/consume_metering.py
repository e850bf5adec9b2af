"""`python manage.py consume_metering`: the gateway's metering consumer (portal.gateway.metering),
a process of its own beside the gateway workers (`make serve-prod` starts one). It stores the
events the workers hand over through Redis; SIGTERM or SIGINT lets it finish the batch it holds."""

import signal
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand

from portal.gateway.metering import MeterConsumer


class Command(BaseCommand):
    help = ("Store the usage events the gateway's workers hand over through Redis (GATEWAY_REDIS_URL), "
            "until stopped. Any number may run.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true",
                            help="store what is waiting now (and any orphaned in-flight batch), then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.GATEWAY_REDIS_URL:
            self.stdout.write("No GATEWAY_REDIS_URL: each gateway process stores its own metering; "
                              "nothing to consume.")
            return
        consumer = MeterConsumer(redis.Redis.from_url(settings.GATEWAY_REDIS_URL))
        if options["once"]:
            while consumer.flush_once():
                pass
            self.stdout.write(f"{consumer.stored} events stored.")
            return
        stopping = False

        def stop(*_signal) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"metering consumer {consumer.consumer_id} started", ending="\n")
        self.stdout.flush()
        consumer.run(lambda: stopping)
        self.stdout.write(f"metering consumer stopped; {consumer.stored} events stored.")
