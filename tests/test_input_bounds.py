"""Every time a caller names is range-checked before use (usage.timebuckets): 0 and the far past,
negative numbers, 2**63, year 10000 and spans no timedelta holds are each the dialect's own 4xx
naming the parameter, never a 500, and nothing is stored. Page numbers are bounded the same way."""

from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient

from tests import factories
from tests.api_helpers import client_for
from usage.timebuckets import EARLIEST_EPOCH, LATEST_EPOCH, OutOfRange, checked_day, checked_instant, instant_from_epoch

HUGE = 2**63
MR = "/api/v1/modelRouter/open/billing/cost/"
NOW = 1_780_000_000  # 2026-05-28


@pytest.mark.parametrize("seconds", [-1, -HUGE, LATEST_EPOCH, 1_000_000_000_000, HUGE, 10**30])
def test_epoch_seconds_outside_the_range_are_refused(seconds):
    with pytest.raises(OutOfRange):
        instant_from_epoch(seconds)


def test_the_range_ends_are_what_they_say():
    assert instant_from_epoch(EARLIEST_EPOCH) == datetime(1970, 1, 1, tzinfo=UTC)
    assert instant_from_epoch(LATEST_EPOCH - 1) == datetime(2199, 12, 31, 23, 59, 59, tzinfo=UTC)
    with pytest.raises(OutOfRange):
        checked_instant(datetime.min.replace(tzinfo=UTC))
    with pytest.raises(OutOfRange):
        checked_day(datetime.max.date())


def _modelrouter_problem(response, name):
    body = response.json()
    assert response.status_code == 400 and body["errCode"] == "B.Param.Invalid", body
    assert name in body["errMessage"]


@pytest.mark.parametrize("endpoint", ["overview", "trend", "models", "model-detail", "breakdown"])
@pytest.mark.parametrize("start, end, named", [
    (0, 100_000_000_000_000, "endTime"),  # a span no timedelta holds
    (1_000_000_000_000, 1_000_000_000_001, "startTime"),  # milliseconds: year 33658
    (-1, NOW, "startTime"),
    (NOW, HUGE, "endTime"),
    (HUGE, HUGE + 1, "startTime"),
], ids=["span-overflow", "year-33658", "negative", "end-2^63", "both-2^63"])
def test_modelrouter_times_out_of_range_are_b_param_invalid(ram_world, endpoint, start, end, named):
    response = client_for(ram_world.alice).get(f"{MR}{endpoint}?startTime={start}&endTime={end}&modelId=1")
    _modelrouter_problem(response, named)


def test_modelrouter_from_the_epoch_is_a_range_like_any_other(ram_world):
    response = client_for(ram_world.alice).get(f"{MR}overview?startTime=0&endTime=86400")
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("query, named", [
    ("start_time=-1&end_time=100", "start_time"),
    (f"start_time={HUGE}&end_time={HUGE + 10}", "start_time"),
    (f"start_time={NOW}&end_time={HUGE}", "end_time"),
    ("start_time=0&end_time=100000000000000", "end_time"),
])
def test_r9s_times_out_of_range_are_400_in_its_envelope(ram_world, query, named):
    response = client_for(ram_world.alice).get(f"/api/v1/portal/management/usage?{query}")
    body = response.json()
    assert response.status_code == 400 and body["meta"]["code"] == 400 and body["data"] is None
    assert named in body["meta"]["message"]


@pytest.mark.parametrize("path", ["/api/v1/billing/usage", "/api/v1/billing/usage-analytics"])
@pytest.mark.parametrize("start, end, named", [
    ("0001-01-01T00:00:00+14:00", "2026-01-01T00:00:00Z", "startDate"),
    ("1969-12-31T23:59:59Z", "2026-01-01T00:00:00Z", "startDate"),
    ("2026-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00", "endDate"),
    ("2026-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "endDate"),
])
def test_venice_dates_out_of_range_are_400_naming_the_field(ram_world, path, start, end, named):
    response = client_for(ram_world.alice).get(path, {"startDate": start, "endDate": end})
    assert response.status_code == 400, response.content
    assert named in response.json()["details"]


@pytest.mark.parametrize("query, named", [
    ({"start_date": "0001-01-01", "end_date": "0001-01-02"}, "start_date"),
    ({"start_date": "2026-01-01", "end_date": "9999-12-31"}, "end_date"),
    ({"start_date": "2026-01-01", "end_date": "10000-01-01"}, "end_date"),
])
def test_aione_days_out_of_range_are_422_naming_the_field(ram_world, query, named):
    response = client_for(ram_world.alice).get("/api/v1/obs/usage", query)
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == ["query", named]


@pytest.mark.parametrize("change, named", [
    ({"start": "0001-01-01T00:00:00+05:00"}, "start"),
    ({"start": "1900-01-01T00:00:00Z"}, "start"),
    ({"end": "9999-12-31T23:00:00-12:00"}, "end"),
], ids=["year-1", "1900", "year-9999"])
def test_weave_instants_out_of_range_are_422_naming_the_field(ram_world, change, named):
    body = {"project_id": str(ram_world.acme.uuid), "start": "2026-01-01T00:00:00Z", **change}
    response = client_for(ram_world.alice).post("/calls/stats", body, format="json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == ["body", named]


@pytest.mark.parametrize("path, body", [
    ("/api/v1/gateway/keys", {"name": "k", "expires_at": "9999-12-31T23:59:59-12:00"}),
    ("/api/v1/billing/credit-grants", {"kind": "grant", "amount": "1", "expires_at": "0001-01-01T00:00:00+01:00"}),
], ids=["key-expiry", "grant-expiry"])
def test_billing_and_key_expiries_out_of_range_are_422(ram_world, path, body):
    from keys import services as key_services
    from portal.services import SYSTEM

    if "credit-grants" in path:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer " + key_services.create_service_token(
            actor=SYSTEM, name="gw").secret)
        body = {**body, "org_id": str(ram_world.acme.uuid)}
    else:
        client = client_for(ram_world.alice)
        body = {**body, "team_id": str(ram_world.research.uuid)}
    response = client.post(path, body, format="json")
    assert response.status_code == 422, response.content
    assert ["body", "expires_at"] in [problem["loc"] for problem in response.json()["detail"]]


def test_management_key_expiry_out_of_range_is_422(ram_world):
    response = client_for(ram_world.alice).post(
        f"/api/v1/ram/members/{ram_world.bob.uuid}/management-keys",
        {"name": "k", "expires_at": "10000-01-01T00:00:00Z"}, format="json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == ["body", "expires_at"]


@pytest.mark.parametrize("timestamp", [-1, HUGE, "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-12:00",
                                       "1969-12-31T23:59:59Z"])
def test_ingested_timestamps_out_of_range_are_refused_and_nothing_is_stored(ram_world, timestamp):
    from keys import services as key_services
    from portal.services import SYSTEM
    from usage.models import UsageEvent

    key, _ = factories.make_inference_key(ram_world.research)
    model = factories.make_model()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + key_services.create_service_token(actor=SYSTEM, name="gw").secret)
    good = factories.event(key, model)
    response = client.post("/api/v1/usage/events", {"events": [good, factories.event(key, model, timestamp=timestamp)]},
                           format="json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == ["body", "events", 1, "timestamp"]
    assert not UsageEvent.objects.exists()



@pytest.mark.parametrize("path, status", [
    ("/api/v1/gateway/keys?page=2305843009213693953", 422),
    ("/api/v1/billing/invoices?page=10364777057798910709929760176209920", 422),
    ("/api/v1/obs/usage?page=1000001", 422),
    ("/api/v1/billing/usage?page=1000001", 400),
    ("/api/v1/modelRouter/open/billing/cost/models?startTime=0&endTime=86400&pageIndex=1000001", 400),
], ids=["keys", "invoices", "aione", "venice", "modelrouter"])
def test_a_page_number_past_any_list_is_refused_not_a_500(ram_world, path, status):
    response = client_for(ram_world.alice).get(path)
    assert response.status_code == status, response.content
    assert "page" in response.content.decode()
