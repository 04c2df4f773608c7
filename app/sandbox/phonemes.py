"""ARPAbet → IPA mapping and CMU Pronouncing Dictionary look-ups.

The recogniser (transcribing) and the reference texts (feedback) both go through
this one module, so a phoneme the recogniser hears and the same phoneme in a
reference transcription are always spelt the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pocketsphinx

# The CMU dictionary has no stress marks in the copy pocketsphinx ships, and the
# recogniser's phone set has none either, so vowels map to one symbol each.
# AH is the schwa in most unstressed syllables and is far more frequent than
# stressed /ʌ/, so without stress information ə is the better guess.
ARPABET_TO_IPA: dict[str, str] = {
    "AA": "ɑ",
    "AE": "æ",
    "AH": "ə",
    "AO": "ɔ",
    "AW": "aʊ",
    "AY": "aɪ",
    "B": "b",
    "CH": "tʃ",
    "D": "d",
    "DH": "ð",
    "EH": "ɛ",
    "ER": "ɝ",
    "EY": "eɪ",
    "F": "f",
    "G": "ɡ",
    "HH": "h",
    "IH": "ɪ",
    "IY": "i",
    "JH": "dʒ",
    "K": "k",
    "L": "l",
    "M": "m",
    "N": "n",
    "NG": "ŋ",
    "OW": "oʊ",
    "OY": "ɔɪ",
    "P": "p",
    "R": "ɹ",
    "S": "s",
    "SH": "ʃ",
    "T": "t",
    "TH": "θ",
    "UH": "ʊ",
    "UW": "u",
    "V": "v",
    "W": "w",
    "Y": "j",
    "Z": "z",
    "ZH": "ʒ",
}

# Words are letters with inner apostrophes ("here's"); digits and punctuation are
# not words, so catalogue texts spell numbers out.
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


class UnknownWordError(LookupError):
    """A word of a text is not in the pronouncing dictionary."""


def arpabet_to_ipa(symbols: Iterable[str]) -> list[str]:
    """Map ARPAbet symbols to IPA, dropping stress digits, silence and noise symbols."""
    phonemes: list[str] = []
    for symbol in symbols:
        ipa = ARPABET_TO_IPA.get(symbol.upper().rstrip("012"))
        # SIL, +NSN+, +SPN+ and the like are not phonemes of the utterance.
        if ipa is not None:
            phonemes.append(ipa)
    return phonemes


def model_dir() -> Path:
    """The en-us model folder inside the pocketsphinx wheel."""
    return Path(pocketsphinx.get_model_path()) / "en-us"


def cmudict_path() -> Path:
    """The CMU Pronouncing Dictionary that the pocketsphinx wheel ships."""
    return model_dir() / "cmudict-en-us.dict"


def words_of(text: str) -> list[str]:
    """The dictionary words of a text, lower-cased, in order."""
    return _WORD.findall(text.lower().replace("’", "'"))


def load_pronunciations(words: Iterable[str], path: Path | None = None) -> dict[str, list[str]]:
    """The first (most common) ARPAbet pronunciation of each wanted word.

    Only the wanted words are kept, so the 130 000-line dictionary costs one scan
    and little memory.
    """
    wanted = set(words)
    found: dict[str, list[str]] = {}
    with (path or cmudict_path()).open(encoding="utf-8") as lines:
        for line in lines:
            head, _, tail = line.partition(" ")
            # Alternatives are written "word(2)"; the first entry is the main one.
            if head in wanted and head not in found:
                found[head] = tail.split()
    return found


def text_to_ipa(text: str, pronunciations: dict[str, list[str]] | None = None) -> list[str]:
    """The IPA phonemes of a text read word by word from the CMU dictionary.

    Raises UnknownWordError naming every word the dictionary lacks.
    """
    words = words_of(text)
    known = pronunciations if pronunciations is not None else load_pronunciations(words)
    missing = sorted({word for word in words if word not in known})
    if missing:
        raise UnknownWordError(f"Not in the pronouncing dictionary: {', '.join(missing)}")
    return [ipa for word in words for ipa in arpabet_to_ipa(known[word])]
