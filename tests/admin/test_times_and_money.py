"""Times in the organization's zone with the zone named, money with 2 places, all 8 only on a
single event's cost: what alice (Asia/Shanghai, CNY) and charlie (America/New_York, USD) read."""

from decimal import Decimal

from django.urls import reverse
from django.utils import translation

from billing.money import format_money


def _page(client, member, url):
    client.force_login(member.user)
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def test_usage_events_are_listed_in_the_organizations_zone_which_is_named(client, world, books):
    alice_list = _page(client, world.alice, reverse("admin:usage_usageevent_changelist"))
    assert "2026-03-01 18:00 (Asia/Shanghai)" in alice_list
    charlie_list = _page(client, world.charlie, reverse("admin:usage_usageevent_changelist"))
    assert "2026-03-01 05:00 (America/New_York)" in charlie_list


def test_an_events_read_only_page_shows_its_times_in_the_zone(client, world, books):
    body = _page(client, world.alice, reverse("admin:usage_usageevent_change", args=[books.acme_event.pk]))
    assert "2026-03-01 18:00 (Asia/Shanghai)" in body


def test_a_platform_operator_without_an_organization_reads_utc_named(client, books, root):
    client.force_login(root)
    body = client.get(reverse("admin:usage_usageevent_changelist")).content.decode()
    assert "2026-03-01 10:00 (UTC)" in body


def test_other_lists_name_the_zone_too(client, world, books):
    for url in (reverse("admin:keys_inferencekey_changelist"), reverse("admin:portal_auditlog_changelist"),
                reverse("admin:billing_creditgrant_changelist"), reverse("admin:billing_ledgerentry_changelist")):
        assert "(Asia/Shanghai)" in _page(client, world.alice, url), url


def test_a_datetime_input_says_which_zone_it_is_in(client, world, books):
    body = _page(client, world.alice, reverse("admin:keys_inferencekey_add"))
    assert "Time in Asia/Shanghai." in body


def test_an_events_cost_keeps_its_8_places_and_is_labelled_with_its_currency(client, world, books):
    cost = books.acme_event.cost
    assert cost != cost.quantize(Decimal("0.01"))  # a cost the cents would hide
    body = _page(client, world.alice, reverse("admin:usage_usageevent_changelist"))
    assert format_money(cost, "CNY", "en", per_event=True) in body
    detail = _page(client, world.alice, reverse("admin:usage_usageevent_change", args=[books.acme_event.pk]))
    assert format_money(books.acme_event.output_cost, "CNY", "en", per_event=True) in detail


def test_invoices_grants_and_the_ledger_show_money_with_2_places(client, world, books):
    invoice = books.acme_invoice
    invoice_list = _page(client, world.alice, reverse("admin:billing_invoice_changelist"))
    assert format_money(invoice.amount, "CNY", "en") in invoice_list
    assert f"{invoice.amount:f}" not in invoice_list  # not the stored 8 places
    for url in (reverse("admin:billing_creditgrant_changelist"), reverse("admin:billing_ledgerentry_changelist")):
        body = _page(client, world.alice, url)
        assert "CN¥12.50" in body and "12.50000000" not in body, url
    charlie_grants = _page(client, world.charlie, reverse("admin:billing_creditgrant_changelist"))
    assert "$12.50" in charlie_grants


def test_an_invoice_page_shows_totals_and_lines_as_money_and_the_exact_sum_with_8_places(client, world, books):
    body = _page(client, world.alice, reverse("admin:billing_invoice_change", args=[books.acme_invoice.pk]))
    assert format_money(books.acme_invoice.subtotal, "CNY", "en") in body
    assert "CN¥5.55" in body  # the usage line's amount
    assert "CN¥5.55123456" in body  # its exact sum of event costs
    assert "CN¥99.00" in body  # the plan fee's unit price, a whole amount


def test_money_follows_the_readers_language(client, world, books):
    world.alice.language = "zh-hans"
    world.alice.save(update_fields=["language"])
    body = _page(client, world.alice, reverse("admin:billing_creditgrant_changelist"))
    with translation.override("zh-hans"):
        expected = format_money(Decimal("12.5"), "CNY", translation.to_locale("zh-hans"))
    assert expected in body
