"""Needleman–Wunsch alignment of a reference and an actual phoneme sequence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

# Back-pointers, one byte per cell: which neighbour the best path came from.
_DIAGONAL, _UP, _LEFT = 0, 1, 2


class Operation(str, Enum):
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
    # Costs need only the previous row; back-pointers need the whole table.
    previous = list(range(cols + 1))
    pointers = [bytearray([_LEFT]) * (cols + 1)]
    for i in range(1, rows + 1):
        current = [i] + [0] * cols
        row = bytearray(cols + 1)
        row[0] = _UP
        wanted = reference[i - 1]
        for j in range(1, cols + 1):
            diagonal = previous[j - 1] + (0 if wanted == actual[j - 1] else 1)
            up = previous[j] + 1
            left = current[j - 1] + 1
            if diagonal <= up and diagonal <= left:
                current[j], row[j] = diagonal, _DIAGONAL
            elif up <= left:
                current[j], row[j] = up, _UP
            else:
                current[j], row[j] = left, _LEFT
        pointers.append(row)
        previous = current

    steps: list[Step] = []
    i, j = rows, cols
    while i > 0 or j > 0:
        move = pointers[i][j] if i > 0 and j > 0 else (_UP if i > 0 else _LEFT)
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
