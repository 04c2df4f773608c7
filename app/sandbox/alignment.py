"""Needleman–Wunsch alignment of a reference and an actual phoneme sequence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

# Back-pointers, one byte per cell: which neighbour the best path came from.
_DIAGONAL, _UP, _LEFT = 0, 1, 2


class Operation(StrEnum):
    """What one alignment column says about the reading."""

    MATCH = "Match"
    REPLACEMENT = "Replacement"
    # An actual phoneme with no reference counterpart: something extra was said.
    INSERTION = "Insertion"
    # A reference phoneme with no actual counterpart: something was left out.
    DELETION = "Deletion"


@dataclass(frozen=True, slots=True)
class Step:
    """One column of the alignment; positions index the reference / actual lists."""

    operation: Operation
    reference: int | None
    actual: int | None


def align(reference: Sequence[str], actual: Sequence[str]) -> list[Step]:
    """Globally align two phoneme sequences with the fewest edits.

    Every substitution, insertion and deletion costs 1 and a match 0 (Levenshtein
    costs in Needleman–Wunsch form). Among equally cheap alignments the traceback
    prefers a replacement over a deletion over an insertion, so the result is
    deterministic.
    """
    rows, cols = len(reference), len(actual)
    # Integer codes let numpy compare a reference phoneme with a whole reading.
    codes = {phoneme: code for code, phoneme in enumerate(dict.fromkeys([*reference, *actual]))}
    wanted = np.fromiter((codes[p] for p in reference), dtype=np.int64, count=rows)
    heard = np.fromiter((codes[p] for p in actual), dtype=np.int64, count=cols)
    offsets = np.arange(cols + 1)

    # Row by row over the reference (the short side): costs need only the
    # previous row, back-pointers the whole table.
    pointers = np.full((rows + 1, cols + 1), _LEFT, dtype=np.int8)
    pointers[1:, 0] = _UP
    previous = offsets
    for i in range(1, rows + 1):
        diagonal = previous[:-1] + (heard != wanted[i - 1])
        up = previous[1:] + 1
        # A left move depends on the cell just computed, which a plain vector
        # operation cannot see; but a chain of left moves costs its length, so
        # current[j] = min over k <= j of (best[k] + j - k): a running minimum.
        best = np.concatenate(([i], np.minimum(diagonal, up)))
        current = np.minimum.accumulate(best - offsets) + offsets
        left = current[:-1] + 1
        pointers[i, 1:] = np.where(
            (diagonal <= up) & (diagonal <= left), _DIAGONAL, np.where(up <= left, _UP, _LEFT)
        )
        previous = current

    steps: list[Step] = []
    i, j = rows, cols
    while i > 0 or j > 0:
        move = pointers[i, j]
        if move == _DIAGONAL:
            i, j = i - 1, j - 1
            same = reference[i] == actual[j]
            steps.append(Step(Operation.MATCH if same else Operation.REPLACEMENT, i, j))
        elif move == _UP:
            i -= 1
            steps.append(Step(Operation.DELETION, i, None))
        else:
            j -= 1
            steps.append(Step(Operation.INSERTION, None, j))
    steps.reverse()
    return steps


def accuracy(steps: Sequence[Step]) -> float:
    """Percentage of alignment columns that are matches: matches ÷ columns × 100.

    The alignment length counts matches, replacements, deletions *and* insertions,
    so a reading padded with extra phonemes loses accuracy instead of collecting
    chance matches for free, and an empty reading scores 0. Two empty sequences
    are identical and score 100.
    """
    if not steps:
        return 100.0
    matches = sum(1 for step in steps if step.operation is Operation.MATCH)
    return 100.0 * matches / len(steps)
