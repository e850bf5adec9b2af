"""Usage events as the gateway reports them, rated and frozen at ingest."""

import json

from django.db import models

from billing.models import Model, Price
from billing.money import amount_field, currency_field
from keys.models import InferenceKey
from portal.models import Department, Member, Organization

TRACE_FIELD_LENGTH = 128


def _trace_field() -> models.CharField:
    # NULL means "the gateway sent none", which differs from an empty string: an event without
    # a conversation_id is a conversation of its own.
    return models.CharField(max_length=TRACE_FIELD_LENGTH, null=True, blank=True)  # noqa: DJ001


class UsageEvent(models.Model):
    """One gateway request. Organization, department, member, price and cost are resolved when
    the event is ingested and never change afterwards, except through an explicit re-rate."""

    id = models.BigAutoField(primary_key=True)
    # Unique through a constraint rather than unique=True: on PostgreSQL the field option also
    # builds a varchar_pattern_ops index (301 MiB at 10 M events) that no query uses.
    request_id = models.CharField(max_length=128)
    timestamp = models.DateTimeField()
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+", db_index=False)
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="+", db_index=False)
    key = models.ForeignKey(InferenceKey, on_delete=models.PROTECT, related_name="+", db_index=False)
    member = models.ForeignKey(Member, null=True, on_delete=models.SET_NULL, related_name="+", db_index=False)
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="+", db_index=False)
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="+", db_index=False)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    # Prompt tokens written to a provider's prompt cache; like cached_tokens, a part of prompt_tokens.
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    image_count = models.PositiveIntegerField(default=0)
    video_seconds = models.PositiveIntegerField(default=0)
    input_chars = models.PositiveBigIntegerField(default=0)
    output_chars = models.PositiveBigIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    op_name = _trace_field()
    trace_id = _trace_field()
    parent_id = _trace_field()
    thread_id = _trace_field()
    turn_id = _trace_field()
    conversation_id = _trace_field()
    cost = amount_field()
    # The cost's parts (billing.rating.Cost); images and video are cost − the four.
    input_cost = amount_field()
    cache_read_cost = amount_field()
    cache_write_cost = amount_field()
    output_cost = amount_field()
    currency = currency_field()
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["timestamp", "id"]
        constraints = [models.UniqueConstraint(fields=["request_id"], name="usageevent_request_id_unique")]
        indexes = [
            # Keyset export pages walk (organization, timestamp, id) in either direction; every
            # raw-event query names an organization and a time range. Nothing else is indexed:
            # each index is written for every event ingested.
            models.Index(fields=["organization", "timestamp", "id"], name="usageevent_org_time"),
        ]

    def __str__(self) -> str:
        return self.request_id

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# --- rollups -------------------------------------------------------------------------------
# Maintained in the ingest transaction by additive INSERT ... ON CONFLICT DO UPDATE (usage/rollups.py).
# Levels chosen by measurement at ten million events (bench/RESULTS.md): a level keyed by
# department and model at 15 minutes had nearly as many rows as the raw table, so besides the
# fine level (for drill-downs) the coarse levels drop dimensions instead: organization × local
# hour, and organization × local day by department, by model, and by both.
# Fine buckets are UTC epoch seconds floored to 15 minutes: every IANA zone's offset is a
# multiple of 15 minutes, so local hours and days are exact unions of them in any zone.

BUCKET_SECONDS = 900
HOUR_SECONDS = 3600


class LatencyBinsField(models.Field):
    """A latency histogram in usage/histogram.py's encoding: [first non-empty bin, then for each bin
    from it to the last non-empty one the events in bins up to it] (cumulative counts, so a
    percentile is a binary search). `integer[]` on PostgreSQL, a JSON list elsewhere; the upserts
    merge two of them with the SQL
    function `usage_bins_add` (a migration creates it on PostgreSQL, usage/apps.py registers it
    on SQLite connections)."""

    description = "latency histogram bins"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("default", list)
        super().__init__(*args, **kwargs)

    def db_type(self, connection) -> str:
        return "integer[]" if connection.vendor == "postgresql" else "text"

    def from_db_value(self, value, expression, connection):
        if value is None or isinstance(value, list):
            return value
        return json.loads(value)

    def to_python(self, value):
        return json.loads(value) if isinstance(value, str) else value

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None or connection.vendor == "postgresql":
            return value
        return json.dumps(value, separators=(",", ":"))


def _count() -> models.PositiveBigIntegerField:
    return models.PositiveBigIntegerField(default=0)


class RollupMetrics(models.Model):
    """What every rollup row adds up: enough for every dialect's sums, averages and rates."""

    currency = currency_field()
    requests = _count()
    errors = _count()
    prompt_tokens = _count()
    completion_tokens = _count()
    cached_tokens = _count()
    cache_creation_tokens = _count()
    image_count = _count()
    video_seconds = _count()
    input_chars = _count()
    output_chars = _count()
    cost_units = models.BigIntegerField(default=0)  # 1e-8 currency units (billing.money.to_units)
    input_cost_units = models.BigIntegerField(default=0)
    cache_read_cost_units = models.BigIntegerField(default=0)
    cache_write_cost_units = models.BigIntegerField(default=0)
    output_cost_units = models.BigIntegerField(default=0)
    latency_sum_ms = _count()
    latency_min_ms = models.PositiveIntegerField(default=0)
    latency_max_ms = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{type(self).__name__} org {self.organization_id}: {self.requests} requests"


def _fk(model, **kwargs):
    # No database constraint: rollups are derived from events, which carry the constraints, and a
    # per-row foreign-key check on every additive upsert would cost more than the upsert itself.
    return models.ForeignKey(model, on_delete=models.DO_NOTHING, related_name="+", db_index=False,
                             db_constraint=False, **kwargs)


class UsageFine15(RollupMetrics):
    """Fine level: organization × department × key × model × member × status class × 15 minutes."""

    organization = _fk(Organization)
    bucket = models.BigIntegerField()
    department = _fk(Department)
    key = _fk(InferenceKey)
    model = _fk(Model)
    member_id_or_zero = models.BigIntegerField(default=0)  # 0: no member (NULL would defeat ON CONFLICT)
    status_class = models.PositiveSmallIntegerField()  # 2, 3, 4 or 5 for 2xx ... 5xx

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["organization", "bucket", "department", "key", "model", "member_id_or_zero", "status_class",
                    "currency"], name="usagefine15_key")]


class UsageHourly(RollupMetrics):
    """Organization × hour of the organization's own clock (keyed by the hour's first UTC epoch
    second: the UTC hour in whole-hour zones, half past it in Kolkata), with the hour's latency
    histogram. At most 24 rows a day per organization: org-wide hourly charts and percentiles."""

    organization = _fk(Organization)
    hour = models.BigIntegerField()
    latency_bins = LatencyBinsField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "hour", "currency"], name="usagehourly_key")]


class UsageModelHourly(RollupMetrics):
    """Organization × model × hour of the organization's clock (keyed as UsageHourly): usage by
    model in buckets of whole hours that are not whole days (Weave's 6-hour buckets read 114,799
    fifteen-minute rows for 7 days of the heaviest organization at ten million events)."""

    organization = _fk(Organization)
    hour = models.BigIntegerField()
    model = _fk(Model)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "hour", "model", "currency"],
                                               name="usagemodelhourly_key")]


class UsageKeyDaily(RollupMetrics):
    """Organization × department × key × member × model × local day: the groups of ModelRouter's
    cost breakdown and the per-key series (Venice's byKey), whose exact row counts and keyset
    pages come from its unique index instead of the fine level. At ten million events it has
    28 % as many rows as the raw table (bench/RESULTS.md)."""

    organization = _fk(Organization)
    day = models.DateField()
    department = _fk(Department)
    key = _fk(InferenceKey)
    member_id_or_zero = models.BigIntegerField(default=0)  # 0: no member (NULL would defeat ON CONFLICT)
    model = _fk(Model)

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["organization", "day", "department", "key", "member_id_or_zero", "model", "currency"],
            name="usagekeydaily_key")]


class UsageDepartmentKeyDaily(RollupMetrics):
    """Organization × department × key × local day: per-key series and totals (Venice's byKey)
    from one row per key and day, not one per key, member and model (about 114,000 key-daily rows
    for 30 days of the heaviest organization at ten million events, against about 10,600)."""

    organization = _fk(Organization)
    day = models.DateField()
    department = _fk(Department)
    key = _fk(InferenceKey)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "day", "department", "key", "currency"],
                                               name="usagedepartmentkeydaily_key")]


class UsageDaily(RollupMetrics):
    """Per day in the organization's own timezone: organization × department × model × local day.
    Rebuilt by `manage.py rebuild_rollups --org` when an organization changes its timezone."""

    organization = _fk(Organization)
    day = models.DateField()
    department = _fk(Department)
    model = _fk(Model)

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["organization", "day", "department", "model", "currency"], name="usagedaily_key")]


class UsageDepartmentDaily(RollupMetrics):
    """Organization × department × local day, with the day's latency histogram: team rankings, a
    department's totals and its percentiles over whole days (the hourly histograms have no
    department)."""

    organization = _fk(Organization)
    day = models.DateField()
    department = _fk(Department)
    latency_bins = LatencyBinsField()

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["organization", "day", "department", "currency"], name="usagedepartmentdaily_key")]


class UsageModelDaily(RollupMetrics):
    """Organization × model × local day: per-model totals over weeks and months."""

    organization = _fk(Organization)
    day = models.DateField()
    model = _fk(Model)

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["organization", "day", "model", "currency"], name="usagemodeldaily_key")]


class UsageOrganizationDaily(RollupMetrics):
    """Organization × local day, with the day's latency histogram: the organization's totals,
    daily series and percentiles over whole days from one row a day (90 histograms for 90 days,
    not 2,160 hourly ones)."""

    organization = _fk(Organization)
    day = models.DateField()
    latency_bins = LatencyBinsField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "day", "currency"],
                                               name="usageorganizationdaily_key")]


class UsageKeyDailyRows(models.Model):
    """How many UsageKeyDaily rows an organization has on a local day (one per group of
    department, key, member, model and currency with events): the row count of ModelRouter's
    breakdown in one row a day instead of a count of the level's index entries (342,843 for 90
    days of the heaviest organization at ten million events). Kept by the folds as they insert
    key-daily rows (usage/rollups.py)."""

    organization = _fk(Organization)
    day = models.DateField()
    rows = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "day"], name="usagekeydailyrows_key")]

    def __str__(self) -> str:
        return f"org {self.organization_id} {self.day}: {self.rows} key-daily rows"


class UsageHourGroups(models.Model):
    """How many groups of department, key, member and model an organization has events of in a
    local hour (keyed as the hourly levels are: the hour's first UTC epoch second): the row count
    of ModelRouter's hourly breakdown in one row an hour instead of a hash of the fine level's
    rows (about 140,000 for 7 days of the heaviest organization at ten million events: 76 ms).
    Kept by the folds as they insert fine rows (usage/rollups.py)."""

    organization = _fk(Organization)
    hour = models.BigIntegerField()
    groups = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "hour"], name="usagehourgroups_key")]

    def __str__(self) -> str:
        return f"org {self.organization_id} hour {self.hour}: {self.groups} groups"


class UsageFillState(models.Model):
    """How fresh an organization's usage is: the newest event stored, and how many there are."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="+", primary_key=True)
    newest_event_at = models.DateTimeField()
    events = _count()

    def __str__(self) -> str:
        return f"org {self.organization_id}: {self.events} events, newest {self.newest_event_at}"


# --- activity: distinct conversations and per-minute peaks --------------------------------------
# Neither adds up over a batch of events the way RollupMetrics do (a distinct count, a maximum of
# per-minute counts), so they are kept beside the levels, not as levels (usage/activity.py folds
# and reads them). Each is kept per department and, under department 0, for the whole
# organization: a conversation that spans two teams counts once in each and once in total, and
# the organization's busiest minute is not the busiest minute of any one team.

class UsageConversation(models.Model):
    """Each conversation id's last active local day, per department and (department 0) for the
    whole organization; `previous_day` is what `last_day` was before the last fold touched the
    row, so that the same statement can move the conversation's count in UsageConversationDaily."""

    organization = _fk(Organization)
    department_id_or_zero = models.BigIntegerField()  # 0: the whole organization
    conversation_id = models.CharField(max_length=TRACE_FIELD_LENGTH)
    last_day = models.DateField()
    previous_day = models.DateField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "department_id_or_zero", "conversation_id"],
                                               name="usageconversation_key")]

    def __str__(self) -> str:
        return f"org {self.organization_id} department {self.department_id_or_zero}: {self.conversation_id}"


class UsageConversationDaily(models.Model):
    """Organization × department (0: all) × local day: the conversations whose last active day is
    that day, plus the requests of that day without a conversation id (each a conversation of
    its own, API.md §1). Summed over [D1, D2) it is exactly the distinct conversations of the
    range, provided no event of the organization lies at or after D2 (usage/activity.py)."""

    organization = _fk(Organization)
    department_id_or_zero = models.BigIntegerField()
    day = models.DateField()
    conversations = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "department_id_or_zero", "day"],
                                               name="usageconversationdaily_key")]

    def __str__(self) -> str:
        return f"org {self.organization_id} department {self.department_id_or_zero} {self.day}: {self.conversations}"


class UsagePeakHourly(models.Model):
    """Organization × department (0: all) × hour of the organization's clock (keyed as
    UsageHourly): the most requests in any one UTC minute of that hour. Every zone's offset is a
    whole number of minutes, so each UTC minute lies in one local hour."""

    organization = _fk(Organization)
    department_id_or_zero = models.BigIntegerField()
    hour = models.BigIntegerField()
    peak_requests = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "department_id_or_zero", "hour"],
                                               name="usagepeakhourly_key")]

    def __str__(self) -> str:
        return f"org {self.organization_id} department {self.department_id_or_zero} {self.hour}: {self.peak_requests}"


# --- the fold queue: batches stored but not yet folded into the levels -------------------------

class UsageFoldQueue(models.Model):
    """The events one ingested batch stored for one organization, waiting to be folded into every
    rollup level, the fill state, conversations and peaks (usage/folding.py). Written in the
    ingest transaction, deleted in the transaction that folds them: a row exists exactly while
    its events are stored but not yet counted by any level."""

    id = models.BigAutoField(primary_key=True)
    # Deleting an organization drops what it had queued, as it drops its rollups.
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    event_ids = models.JSONField()  # the usage_usageevent ids, ascending
    events = models.PositiveIntegerField()  # len(event_ids): how much a folder takes at once
    queued_at = models.DateTimeField()  # the ingest transaction's start: the lag's origin

    def __str__(self) -> str:
        return f"org {self.organization_id}: {self.events} events queued at {self.queued_at}"
