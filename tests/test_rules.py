"""The four-part rules counted between voices, and the penalty the choice among candidates gives them."""

from __future__ import annotations

import numpy as np
from midi_files import roll

from bachsformer.guided import rule_penalties
from bachsformer.rules import count_rules, four_part_scores, lines


def test_parallel_and_hidden_fifths_and_octaves_crossing_and_spacing_are_counted():
    # eighths:    0   1   2   3
    soprano = [72, 74, 76, 77]
    alto = [65, 67, 60, 60]  # a fifth below S, a fifth again (parallel), then over an octave below, under T
    tenor = [60, 62, 64, 62]
    bass = [48, 55, 52, 65]  # octave-ish to T: 60/48 octave, 62/55 not, 64/52 octave (hidden), then above T
    counts = count_rules(np.array([soprano, alto, tenor, bass]))
    assert counts["parallel_fifths"] == 1  # S-A 72/65 -> 74/67
    assert counts["crossings"] == 4  # the Tenor above the Alto at eighths 2 and 3, the Bass above both at 3
    assert counts["spacing"] == 2  # S-A 76/60 and 77/60
    assert counts["hidden_octaves"] >= 1  # T-B into 64/52 from 62/55, both moving
    silent = count_rules(np.array([soprano, [-1] * 4, [-1] * 4, [-1] * 4]))
    assert all(value == 0 for value in silent.values())


def test_four_part_scores_read_each_voice_as_a_line_and_count_notes_out_of_range():
    soprano = roll(1, (72, 0, 16), (74, 16, 32))
    alto = roll(1, (65, 0, 16), (67, 16, 32))  # parallel fifths with the Soprano
    tenor = roll(1, (60, 0, 32))
    bass = roll(1, (30, 0, 32))  # far below the Bass's range
    scores = four_part_scores([soprano, alto, tenor, bass])
    assert scores["parallel_fifths"] == 1 and scores["out_of_range"] == 1 and scores["notes"] == 6
    assert lines([soprano]).tolist() == [[72, 74]]


def test_a_candidate_in_parallel_fifths_with_the_melody_is_penalised_more():
    melody = roll(2, (72, 0, 32), (74, 32, 64))
    before = melody[:1] | roll(1, (65, 0, 32), (60, 0, 32), (53, 0, 32))
    parallel = melody[1:] | roll(1, (67, 0, 32), (62, 0, 32), (55, 0, 32))  # every voice up a tone: fifths
    contrary = melody[1:] | roll(1, (65, 0, 32), (62, 0, 32), (50, 0, 32))  # the Bass down, the Alto held
    penalties = rule_penalties(before, np.stack([parallel, contrary]), melody, 0, 8)
    assert penalties[0] > penalties[1] + 4  # two parallels at least, at 2 each, and again for S-B
