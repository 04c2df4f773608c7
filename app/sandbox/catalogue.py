"""The sandbox's built-in reference texts, stand-in for the ILPS texts service.

Ids are fixed literals so that tasks, fixtures and client bookmarks stay valid
across restarts and machines.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from uuid import UUID

from app.sandbox.phonemes import load_pronunciations, text_to_ipa, words_of


@dataclass(frozen=True, slots=True)
class Text:
    """A passage to read aloud."""

    id: UUID
    title: str
    text: str
    source: str


@dataclass(frozen=True, slots=True)
class Reference:
    """A passage with its reference phonemes (IPA, one symbol per phoneme)."""

    text: Text
    phonemes: tuple[str, ...]

    @property
    def transcription(self) -> str:
        """The phonemes as the contract writes them: separated by spaces."""
        return " ".join(self.phonemes)


PLEASE_CALL_STELLA = Text(
    id=UUID("9a3ad8cb-73ba-4f34-849e-31c15304dcef"),
    title="Please call Stella",
    text=(
        "Please call Stella. Ask her to bring these things with her from the store: "
        "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a "
        "snack for her brother Bob. We also need a small plastic snake and a big toy "
        "frog for the kids. She can scoop these things into three red bags, and we "
        "will go meet her Wednesday at the train station."
    ),
    source="The elicitation paragraph of the Speech Accent Archive (S. H. Weinberger).",
)

NORTH_WIND_AND_THE_SUN = Text(
    id=UUID("8e58b8c7-65b3-437d-9b12-dbc1fc8e5280"),
    title="The North Wind and the Sun",
    text=(
        "The North Wind and the Sun were disputing which was the stronger, when a "
        "traveler came along wrapped in a warm cloak. They agreed that the one who "
        "first succeeded in making the traveler take his cloak off should be "
        "considered stronger than the other. Then the North Wind blew as hard as he "
        "could, but the more he blew the more closely did the traveler fold his "
        "cloak around him; and at last the North Wind gave up the attempt. Then the "
        "Sun shined out warmly, and immediately the traveler took off his cloak. And "
        "so the North Wind was obliged to confess that the Sun was the stronger of "
        "the two."
    ),
    source="Aesop's fable as printed in the Handbook of the International Phonetic Association.",
)

RAINBOW_PASSAGE = Text(
    id=UUID("79547c15-8423-4f49-bb22-26aa67daaa8f"),
    title="The Rainbow Passage",
    text=(
        "When the sunlight strikes raindrops in the air, they act as a prism and form "
        "a rainbow. The rainbow is a division of white light into many beautiful "
        "colors. These take the shape of a long round arch, with its path high above, "
        "and its two ends apparently beyond the horizon. There is, according to "
        "legend, a boiling pot of gold at one end. People look, but no one ever finds "
        "it. When a man looks for something beyond his reach, his friends say he is "
        "looking for the pot of gold at the end of the rainbow."
    ),
    source="The first paragraph of the Rainbow Passage (G. Fairbanks, Voice and Articulation "
    "Drillbook, 1960).",
)

COMMA_GETS_A_CURE = Text(
    id=UUID("ac49a467-c038-4dba-a461-a5df4fa69a73"),
    title="Comma Gets a Cure",
    text=(
        "Well, here's a story for you: Sarah Perry was a veterinary nurse who had been "
        "working daily at an old zoo in a deserted district of the territory, so she "
        "was very happy to start a new job at a superb private practice in North "
        "Square near the Duke Street Tower. That area was much nearer for her and "
        "more to her liking. Even so, on her first morning, she felt stressed. She "
        "ate a bowl of porridge, checked herself in the mirror and washed her face in "
        "a hurry. Then she put on a plain yellow dress and a fleece jacket, picked up "
        "her kit and headed for work."
    ),
    # The authors allow free use on condition that this notice goes with the text.
    source=(
        "The opening of Comma Gets a Cure. Comma Gets a Cure and derivative works may be "
        "used freely for any purpose without special permission, provided the present "
        "sentence and the following copyright notification accompany the passage in "
        "print, if reproduced in print, and in audio format in the case of a sound "
        "recording: Copyright 2000 Douglas N. Honorof, Jill McCullough & Barbara "
        "Somerville. All rights reserved."
    ),
)

QUICK_BROWN_FOX = Text(
    id=UUID("95640f6d-182d-4c29-8da4-f766d99ae923"),
    title="The quick brown fox",
    text="The quick brown fox jumps over the lazy dog.",
    source="The traditional English pangram.",
)

CATALOGUE: tuple[Text, ...] = (
    PLEASE_CALL_STELLA,
    NORTH_WIND_AND_THE_SUN,
    RAINBOW_PASSAGE,
    COMMA_GETS_A_CURE,
    QUICK_BROWN_FOX,
)


@cache
def references() -> dict[UUID, Reference]:
    """Every catalogue text with its reference phonemes, computed once per process."""
    pronunciations = load_pronunciations(word for text in CATALOGUE for word in words_of(text.text))
    return {
        text.id: Reference(text, tuple(text_to_ipa(text.text, pronunciations)))
        for text in CATALOGUE
    }


def find_reference(text_id: UUID) -> Reference | None:
    """The catalogue text with this id and its phonemes, or None."""
    return references().get(text_id)
