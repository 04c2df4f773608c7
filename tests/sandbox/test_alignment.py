"""Needleman–Wunsch alignment and the accuracy formula."""

from __future__ import annotations

import random

import pytest

from app.sandbox.alignment import Operation, Step, accuracy, align

M, R, INS, D = Operation.MATCH, Operation.REPLACEMENT, Operation.INSERTION, Operation.DELETION


def edit_distance(a: list[str], b: list[str]) -> int:
    """Textbook Levenshtein distance, written independently of the code under test."""
    table = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(
                table[i - 1][j] + 1,
                table[i][j - 1] + 1,
                table[i - 1][j - 1] + (a[i - 1] != b[j - 1]),
            )
    return table[-1][-1]


def test_identical_sequences_score_100_with_no_mistakes() -> None:
    phonemes = ["ð", "ə", "k", "w", "ɪ", "k"]
    steps = align(phonemes, phonemes)
    assert [step.operation for step in steps] == [M] * 6
    assert [(step.reference, step.actual) for step in steps] == [(i, i) for i in range(6)]
    assert accuracy(steps) == 100.0


def test_empty_reading_scores_0_and_deletes_everything() -> None:
    steps = align(["p", "l", "i", "z"], [])
    assert steps == [Step(D, i, None) for i in range(4)]
    assert accuracy(steps) == 0.0


def test_two_empty_sequences_are_identical() -> None:
    assert align([], []) == []
    assert accuracy([]) == 100.0


def test_reading_of_an_empty_reference_is_all_insertions() -> None:
    assert align([], ["a", "b"]) == [Step(INS, None, 0), Step(INS, None, 1)]


def test_each_kind_of_mistake_with_positions() -> None:
    reference = ["k", "w", "ɪ", "k", "b", "ɹ", "aʊ", "n"]
    # "w" dropped, "ɪ" heard as "i", an "ə" inserted after "b".
    actual = ["k", "i", "k", "b", "ə", "ɹ", "aʊ", "n"]
    assert align(reference, actual) == [
        Step(M, 0, 0),
        Step(D, 1, None),
        Step(R, 2, 1),
        Step(M, 3, 2),
        Step(M, 4, 3),
        Step(INS, None, 4),
        Step(M, 5, 5),
        Step(M, 6, 6),
        Step(M, 7, 7),
    ]
    assert accuracy(align(reference, actual)) == pytest.approx(100 * 6 / 9)


def test_insertions_lower_accuracy() -> None:
    reference = ["s", "t", "ɛ", "l", "ə"]
    padded = ["s", "t", "ɛ", "l", "ə"] + ["ə"] * 5
    assert accuracy(align(reference, reference)) == 100.0
    assert accuracy(align(reference, padded)) == pytest.approx(50.0)


def test_a_long_wrong_reading_cannot_collect_chance_matches() -> None:
    reference = ["p", "l", "i", "z", "k", "ɔ", "l", "s", "t", "ɛ", "l", "ə"]
    rng = random.Random(5)
    babble = [rng.choice(reference) for _ in range(2000)]
    # Every reference phoneme can find a match somewhere in the babble, but the
    # hundreds of extra phonemes count against it.
    assert accuracy(align(reference, babble)) < 1.0


def test_alignment_has_the_fewest_edits_and_covers_both_sequences() -> None:
    rng = random.Random(42)
    alphabet = ["a", "b", "c", "d"]
    for _ in range(200):
        reference = [rng.choice(alphabet) for _ in range(rng.randint(0, 12))]
        actual = [rng.choice(alphabet) for _ in range(rng.randint(0, 12))]
        steps = align(reference, actual)
        edits = sum(1 for step in steps if step.operation is not M)
        assert edits == edit_distance(reference, actual)
        assert [s.reference for s in steps if s.reference is not None] == list(
            range(len(reference))
        )
        assert [s.actual for s in steps if s.actual is not None] == list(range(len(actual)))
        for step in steps:
            if step.operation in (M, R):
                assert step.reference is not None
                assert step.actual is not None
                same = reference[step.reference] == actual[step.actual]
                assert same is (step.operation is M)
