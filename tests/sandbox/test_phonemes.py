"""The ARPAbet → IPA map, the dictionary and the catalogue's reference phonemes."""

from __future__ import annotations

from uuid import UUID

import pytest

from app.sandbox.catalogue import CATALOGUE, references
from app.sandbox.phonemes import (
    ARPABET_TO_IPA,
    UnknownWordError,
    arpabet_to_ipa,
    cmudict_path,
    load_pronunciations,
    text_to_ipa,
    words_of,
)


def test_stress_digits_silence_and_noise_are_dropped() -> None:
    assert arpabet_to_ipa(["SIL", "P", "L", "IY1", "Z", "+NSN+", "K", "AO0", "L", "+SPN+"]) == [
        "p", "l", "i", "z", "k", "ɔ", "l",
    ]  # fmt: skip


def test_every_symbol_of_the_dictionary_has_an_ipa_spelling() -> None:
    symbols: set[str] = set()
    with cmudict_path().open(encoding="utf-8") as lines:
        for line in lines:
            symbols.update(symbol.rstrip("012") for symbol in line.split()[1:])
    assert symbols == set(ARPABET_TO_IPA)
    assert len(set(ARPABET_TO_IPA.values())) == len(ARPABET_TO_IPA)  # no two share a spelling


def test_words_keep_inner_apostrophes_and_drop_punctuation() -> None:
    assert words_of("Well, here’s a story for you: Sarah!") == [
        "well", "here's", "a", "story", "for", "you", "sarah",
    ]  # fmt: skip


def test_text_to_ipa_uses_the_first_pronunciation() -> None:
    assert " ".join(text_to_ipa("Please call Stella.")) == "p l i z k ɔ l s t ɛ l ə"
    # "the" has two entries; the first, with a schwa, is the one used.
    assert text_to_ipa("the") == ["ð", "ə"]


def test_unknown_words_are_named() -> None:
    with pytest.raises(UnknownWordError, match="qwxzzy"):
        text_to_ipa("please qwxzzy")


def test_load_pronunciations_keeps_only_wanted_words() -> None:
    assert load_pronunciations(["snow", "notaword"]) == {"snow": ["S", "N", "OW"]}


def test_catalogue_ids_are_stable() -> None:
    # Clients and stored tasks refer to these ids: they must never change.
    assert {text.title: text.id for text in CATALOGUE} == {
        "Please call Stella": UUID("9a3ad8cb-73ba-4f34-849e-31c15304dcef"),
        "The North Wind and the Sun": UUID("8e58b8c7-65b3-437d-9b12-dbc1fc8e5280"),
        "The Rainbow Passage": UUID("79547c15-8423-4f49-bb22-26aa67daaa8f"),
        "Comma Gets a Cure": UUID("ac49a467-c038-4dba-a461-a5df4fa69a73"),
        "The quick brown fox": UUID("95640f6d-182d-4c29-8da4-f766d99ae923"),
    }


def test_every_catalogue_text_has_reference_phonemes() -> None:
    ipa = set(ARPABET_TO_IPA.values())
    table = references()
    assert list(table) == [text.id for text in CATALOGUE]
    for reference in table.values():
        assert len(reference.phonemes) > 20
        assert set(reference.phonemes) <= ipa
        assert reference.transcription == " ".join(reference.phonemes)
    stella = table[CATALOGUE[0].id].phonemes
    assert stella[:12] == ("p", "l", "i", "z", "k", "ɔ", "l", "s", "t", "ɛ", "l", "ə")
