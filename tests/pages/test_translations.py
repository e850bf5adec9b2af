"""The portal in four languages (API.md §11): every marked string is translated in every catalog,
and the committed compiled catalogs are the ones the .po files say (make demo needs no gettext)."""

from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from django.conf import settings

LOCALES = ("zh_Hans", "ko", "ar")


def _catalog(locale: str):
    with open(Path(settings.LOCALE_PATHS[0]) / locale / "LC_MESSAGES" / "django.po", "rb") as handle:
        return read_po(handle, locale=locale.replace("_Hans", ""))


def _compiled(locale: str):
    with open(Path(settings.LOCALE_PATHS[0]) / locale / "LC_MESSAGES" / "django.mo", "rb") as handle:
        return read_mo(handle)


@pytest.mark.parametrize("locale", LOCALES)
def test_every_marked_string_is_translated(locale):
    catalog = _catalog(locale)
    assert len(catalog) > 200, "the catalog should hold the whole UI"
    missing = [m.id for m in catalog if m.id and (not m.string or (isinstance(m.string, tuple) and not all(m.string)))]
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert not missing, f"{locale}: {len(missing)} untranslated, e.g. {missing[:5]}"
    assert not fuzzy, f"{locale}: {len(fuzzy)} fuzzy, e.g. {fuzzy[:5]}"


def _entries(catalog) -> dict:
    # Plural entries' ids and strings come as lists from the .mo reader, as tuples from the .po one.
    def frozen(value):
        return tuple(value) if isinstance(value, list | tuple) else value

    return {frozen(m.id): frozen(m.string) for m in catalog if m.id}


@pytest.mark.parametrize("locale", LOCALES)
def test_the_compiled_catalog_matches_its_source(locale):
    source, compiled = _entries(_catalog(locale)), _entries(_compiled(locale))
    assert compiled == source, f"{locale}: run `make messages` and commit locale/"


@pytest.mark.parametrize(("locale", "marker"), [("zh-hans", "登录"), ("ko", "로그인"), ("ar", "تسجيل")])
def test_the_login_page_speaks_the_language(client, db, locale, marker):
    page = client.get("/login/", headers={"accept-language": locale}).content.decode()
    assert marker in page
