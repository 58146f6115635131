"""The four-part rules counted between voices, and the penalty the choice among candidates gives them."""

from __future__ import annotations

import numpy as np
import pytest
from midi_files import roll

from bachsformer.harmonize import (
    BASS_LEAP_FREE,
    BASS_LEAP_WEIGHT,
    BASS_RANGE_WEIGHT,
    OUTER_WEIGHT,
    RULE_WEIGHTS,
    rule_penalties,
)
from bachsformer.rules import count_rules, count_rules_batch, four_part_scores, lines, voice_figures
from bachsformer.voices import Voices


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


def around(*voices: list[int]) -> np.ndarray:
    """Lines keys [4, 64] of two quarters, each voice a pitch per quarter (the quarter before and a candidate)."""
    notes = tuple(np.array([[0, 32, first], [32, 64, second]]) for first, second in voices)
    keys, _ = Voices(notes, 2, 32).lines()  # [2, 4, 32]
    return keys.transpose(1, 0, 2).reshape(4, -1)


def test_a_candidate_in_parallel_fifths_with_the_melody_is_penalised_more():
    parallel = around((72, 74), (65, 67), (60, 62), (53, 55))  # every voice up a tone: fifths
    contrary = around((72, 74), (65, 65), (60, 62), (53, 50))  # the Bass down, the Alto held
    penalties = rule_penalties(np.stack([parallel, contrary]), 0)
    assert penalties.shape == (2,) and penalties.dtype == np.float64
    assert penalties[0] > penalties[1] + 4  # two parallels at least, at 2 each, and again for S-B
    low = around((72, 74), (65, 65), (60, 62), (38, 38))  # a Bass held two semitones below its range (40 ... 60)
    in_range = around((72, 74), (65, 65), (60, 62), (40, 40))
    (below, inside) = rule_penalties(np.stack([low, in_range]), 0)
    assert below - inside == pytest.approx(BASS_RANGE_WEIGHT * 2 * 4)  # 2 semitones at each of 4 eighths
    moved_up = np.stack([around((77, 79), (70, 70), (65, 67), (45, 45))])  # in_range moved up by 5 semitones
    assert rule_penalties(moved_up, 5)[0] == pytest.approx(inside)  # the range is read in the key it is written in
    assert rule_penalties(moved_up, 0)[0] == pytest.approx(inside)  # 45: inside the range as it is
    assert rule_penalties(moved_up, 7)[0] == pytest.approx(inside + BASS_RANGE_WEIGHT * 2 * 4)  # written as 38


def test_voice_figures_count_parallels_rests_unisons_and_leaps_per_voice():
    piece = Voices(
        (
            np.array([[0, 32, 72], [32, 64, 74]]),
            np.array([[0, 32, 65], [32, 64, 67]]),  # parallel fifths with the Soprano
            np.array([[0, 16, 60], [48, 64, 67]]),  # rests for a quarter; then a unison with the Alto
            np.array([[0, 64, 48]]),
        ),
        2,
        32,
    )
    figures = voice_figures([piece])
    assert figures["quarters"] == 2 and figures["notes_per_quarter"] == 7 / 2
    assert figures["parallel_fifths"] == 50.0 and figures["parallels"] == 50.0  # one per 2 quarters
    assert figures["inner_rests"] == 4 / 8  # sixteenths 2 ... 5 of 8: the Tenor rests
    assert figures["unisons"] == 2 / 4  # of the 4 sixteenths where all sound, 2 with Alto and Tenor on one key
    assert figures["leaps"] == {"Soprano": 2.0, "Alto": 2.0, "Tenor": 7.0, "Bass": 0.0}


def test_a_hidden_octave_reached_by_step_in_the_upper_voice_is_counted_but_not_charged_in_the_choice():
    # V-I in C: the Soprano B -> C by step over the Bass G -> C, a fourth up: a hidden octave, both rising
    stepping = np.array([[71, 72], [62, 64], [59, 60], [43, 48]])
    leaping = np.array([[67, 72], [62, 64], [59, 60], [43, 48]])  # the Soprano leaps G -> C into the octave
    assert count_rules(stepping)["hidden_octaves"] == 2  # the evaluation counts every one: S-B, and T-B (B -> C)
    assert count_rules_batch(stepping[None], hidden_by_step=False)["hidden_octaves"].tolist() == [0]
    assert count_rules_batch(leaping[None], hidden_by_step=False)["hidden_octaves"].tolist() == [1]  # S-B alone
    cadence = around((71, 72), (62, 64), (59, 60), (43, 48))
    leapt = around((67, 72), (62, 64), (59, 60), (43, 48))
    charged = RULE_WEIGHTS["hidden_octaves"] + OUTER_WEIGHT  # all pairs, and again for Soprano and Bass
    assert rule_penalties(leapt[None], 0)[0] - rule_penalties(cadence[None], 0)[0] == pytest.approx(charged)


def test_a_bass_moving_a_fourth_is_free_and_a_wider_leap_pays_for_its_semitones_beyond_it():
    def penalty(bass_before: int, bass_now: int) -> float:
        # upper voices held, so that nothing but the Bass's move is charged
        return rule_penalties(around((72, 72), (67, 67), (64, 64), (bass_before, bass_now))[None], 0)[0]

    held = penalty(48, 48)
    assert penalty(43, 48) == pytest.approx(held)  # G -> C, a fourth up: the V-I of a cadence
    assert penalty(48, 43) == pytest.approx(held)  # C -> G, a fourth down
    assert penalty(55, 48) == pytest.approx(held + BASS_LEAP_WEIGHT * (7 - BASS_LEAP_FREE))  # a fifth down
    assert penalty(60, 48) == pytest.approx(held + BASS_LEAP_WEIGHT * (12 - BASS_LEAP_FREE))  # an octave
