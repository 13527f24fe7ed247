"""The commit-offset rule of streams/faust_fixes.py on Faust's own bookkeeping structures (the kill -9 drills in
tests/test_reliability.py exercise it on the real broker): a commit never passes a record that was not processed."""
from __future__ import annotations

from collections import defaultdict

import pytest
from intervaltree import IntervalTree

from streams.faust_fixes import _new_offset_without_passing_a_hole as new_offset

TP = ("participant-events", 2)


class Books:
    """The attributes of faust.transport.consumer.Consumer that the rule reads and updates."""

    def __init__(self, committed, acked, gaps=()):
        self._committed_offset = defaultdict(lambda: None, {TP: committed})
        self._acked = defaultdict(list, {TP: list(acked)})
        self._acked_index = defaultdict(set, {TP: set(acked)})
        self._gap = defaultdict(IntervalTree)
        for start, end in gaps:
            self._gap[TP].addi(start, end)


@pytest.mark.parametrize("committed, acked, expected", [
    (None, [], None),
    (5, [5, 6, 7], 8),          # a run from the committed offset
    (1, [2, 3], None),          # offset 1 not processed: Faust's own check (2 - 1 > 1) let this commit 4
    (0, [1, 2], None),          # ... and it never checked at offset 0
    (0, [0, 1, 3], 2),          # up to the first hole
    (5, [3, 4, 5, 6], 7),       # re-acknowledged older offsets do not block
    (None, [4, 5], 6),          # nothing known (Faust seeks uncommitted partitions to their earliest offset)
])
def test_commits_only_a_run_that_starts_at_the_committed_offset(committed, acked, expected):
    books = Books(committed, acked)
    assert new_offset(books, TP) == expected


def test_registered_gaps_count_as_processed_and_the_rest_waits():
    books = Books(10, [10, 13, 14, 16], gaps=[(11, 13)])  # 11-12: transaction markers; 15 not processed yet
    assert new_offset(books, TP) == 15
    assert books._acked[TP] == [16] and books._acked_index[TP] == {16}
    books._committed_offset[TP] = 15  # what Faust records after committing
    assert new_offset(books, TP) is None  # 15 still missing
    books._acked[TP].append(15)
    assert new_offset(books, TP) == 17
