"""The voice data (voices.py): notes and lines, note starts, the roll of the union, voices from a file's parts."""

from __future__ import annotations

import numpy as np
import pytest
from midi_files import roll

from bachsformer.midi import LOWEST_PITCH, STEPS_PER_QUARTER, quarters_to_notes, tracks_to_midi_bytes
from bachsformer.voices import (
    READ_BY_RULE,
    READ_FROM_PARTS,
    SILENCE,
    Voices,
    concatenate,
    from_lines,
    note_starts,
    read_voices,
    read_voices_bytes,
    restore_repeats,
    voices_from_parts,
)

S = STEPS_PER_QUARTER


def voices(num_quarters: int, *parts: list[tuple[int, int, int]]) -> Voices:
    """Voices of notes (onset step, offset step, MIDI pitch), one list per voice."""
    return Voices(tuple(np.array(part, dtype=np.int64).reshape(-1, 3) for part in parts), num_quarters, S)


def notes_of(made: Voices) -> list[list[list[int]]]:
    return [part.tolist() for part in made.notes]


# A Soprano holding a note across the first boundary, an Alto striking its key again on it, a Tenor with rests,
# a Bass changing key without a rest.
CHORALE = voices(
    2,
    [(16, 40, 72)],
    [(0, 32, 67), (32, 64, 67)],
    [(8, 16, 64), (48, 56, 62)],
    [(0, 20, 48), (20, 64, 43)],
)


def test_lines_hold_each_voices_key_at_each_step_and_where_its_notes_start():
    keys, onsets = CHORALE.lines()
    assert keys.shape == onsets.shape == (2, 4, S) and keys.dtype == np.int64 and onsets.dtype == bool
    assert (keys[0, 0, :16] == SILENCE).all() and (keys[0, 0, 16:] == 72 - LOWEST_PITCH).all()
    assert (keys[1, 0, :8] == 72 - LOWEST_PITCH).all() and (keys[1, 0, 8:] == SILENCE).all()
    assert onsets[0, 0].nonzero()[0].tolist() == [16] and not onsets[1, 0].any()  # held on: no onset
    assert (keys[:, 1] == 67 - LOWEST_PITCH).all()  # the Alto sounds every step ...
    assert onsets[0, 1].nonzero()[0].tolist() == [0] and onsets[1, 1].nonzero()[0].tolist() == [0]  # ... struck twice
    assert (keys[0, 3, :20] == 48 - LOWEST_PITCH).all() and (keys[0, 3, 20:] == 43 - LOWEST_PITCH).all()
    assert onsets[:, 3].sum() == 2
    assert int((keys[:, 2] != SILENCE).sum()) == 16 and onsets[:, 2].sum() == 2


def test_lines_round_trip_through_from_lines():
    back = from_lines(*CHORALE.lines())
    assert (back.num_quarters, back.steps_per_quarter) == (2, S)
    assert notes_of(back) == notes_of(CHORALE)
    assert all(part.dtype == np.int64 and part.shape[1] == 3 for part in back.notes)


def test_note_starts_where_a_voice_is_struck_or_changes_key():
    keys = np.array([SILENCE, 10, 10, 10, 12, 12, SILENCE, 12, 12])
    onsets = np.array([0, 1, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    assert note_starts(keys, onsets).nonzero()[0].tolist() == [
        1,
        3,
        4,
        7,
    ]  # struck, struck again, new key, after a rest
    assert note_starts(keys[2:], onsets[2:]).nonzero()[0].tolist() == [0, 1, 2, 5]  # from silence: a start
    assert note_starts(keys[2:], onsets[2:], key_before=np.array(10)).nonzero()[0].tolist() == [1, 2, 5]  # held on
    onsets_on_rests = np.ones(3, dtype=bool)
    assert not note_starts(np.full(3, SILENCE), onsets_on_rests).any()  # a rest starts nothing
    batch = note_starts(np.stack([keys, keys]), np.stack([onsets, np.zeros_like(onsets)]))
    assert batch.shape == (2, 9) and batch[1].nonzero()[0].tolist() == [1, 4, 7]


def test_from_lines_splits_at_onsets_and_reads_across_quarters():
    keys = np.full((3, 1, S), SILENCE)
    onsets = np.zeros((3, 1, S), dtype=bool)
    keys[0, 0, 24:], keys[1, 0, :], keys[2, 0, :4] = 30, 30, 30  # one run of key 30 across two boundaries ...
    onsets[0, 0, 24] = True
    onsets[1, 0, 16] = True  # ... struck again inside the second quarter
    keys[2, 0, 4:12] = 31  # a new key without an onset is a new note too
    keys[2, 0, 20:] = 31  # after a rest: a new note
    made = from_lines(keys, onsets)
    assert made.num_voices == 1 and made.num_quarters == 3
    pitch = 30 + LOWEST_PITCH
    assert notes_of(made) == [[[24, 48, pitch], [48, 68, pitch], [68, 76, pitch + 1], [84, 96, pitch + 1]]]


def test_two_voices_on_one_key_stay_two_voices_and_the_union_sounds_it_once():
    unison = voices(1, [(0, 32, 60)], [(0, 32, 60)], [(0, 16, 55)], [(0, 32, 48)])
    keys, onsets = unison.lines()
    assert (keys[0, 0] == keys[0, 1]).all() and onsets[0, :2, 0].all()  # both voices hold it, both strike it
    assert notes_of(from_lines(keys, onsets))[:2] == [[[0, 32, 60]], [[0, 32, 60]]]
    union = unison.quarters()
    assert np.array_equal(union, roll(1, (60, 0, 32), (55, 0, 16), (48, 0, 32)))
    assert quarters_to_notes(union).tolist() == [[0, 32, 48], [0, 16, 55], [0, 32, 60]]  # one note on 60
    assert np.array_equal(unison.voice_quarters(1), roll(1, (60, 0, 32)))
    struck_inside = voices(1, [(0, 32, 60)], [(16, 32, 60)])  # the Alto strikes the key the Soprano holds
    assert quarters_to_notes(struck_inside.quarters()).tolist() == [[0, 15, 60], [16, 32, 60]]  # the codec's gap


def test_parts_named_as_voices_are_taken_by_name_beside_an_instrument():
    piano = roll(1, (48, 0, 32), (52, 0, 32), (55, 0, 32))  # chords throughout: not a voice
    parts = [
        ("Piano", piano),
        ("bass ", roll(1, (43, 0, 32))),
        ("Soprano", roll(1, (72, 0, 16), (74, 16, 32))),
        ("Tenor", roll(1, (60, 0, 32))),
        ("Alto", roll(1, (76, 0, 32))),  # above the Soprano: the name decides, not the pitch
    ]
    made = voices_from_parts(parts)
    assert notes_of(made) == [[[0, 16, 72], [16, 32, 74]], [[0, 32, 76]], [[0, 32, 60]], [[0, 32, 43]]]
    assert made.num_quarters == 1 and made.steps_per_quarter == S


def test_four_unnamed_parts_are_ordered_by_mean_pitch():
    parts = [
        ("Flute", roll(1, (70, 0, 32))),
        ("Organ", roll(1, (40, 0, 16), (41, 16, 32))),
        ("Violin", roll(1, (76, 0, 32))),
        ("Empty", roll(1)),  # a part without notes does not count
        ("Cello", roll(1, (55, 0, 32))),
    ]
    made = voices_from_parts(parts)
    assert [part[:, 2].tolist() for part in made.notes] == [[76], [70], [55], [40, 41]]
    assert voices_from_parts(parts[:3]) is None  # three parts: not four voices
    assert voices_from_parts(parts + [("Horn", roll(1, (60, 0, 32)))]) is None  # five


def test_a_part_with_chords_is_not_a_voice():
    line = [("Soprano", roll(2, (72, 0, 64))), ("Alto", roll(2, (67, 0, 64))), ("Tenor", roll(2, (64, 0, 64)))]
    chordal = roll(2, (48, 0, 64), (52, 60, 64))  # two keys at once on 4 of 64 sounding steps: over 2%
    assert voices_from_parts(line + [("Bass", chordal)]) is None
    nearly = roll(2, (48, 0, 64), (52, 63, 64))  # one step of 64: a slip, still one line
    made = voices_from_parts(line + [("Bass", nearly)])
    assert made.num_quarters == 2 and made.notes[3].tolist() == [[0, 63, 48], [63, 64, 52]]  # the later note cuts


def test_a_repeated_note_of_a_part_comes_back_whole():
    repeated = roll(1, (60, 0, 15), (60, 16, 32))  # the codec's gap marks a repeat
    made = voices_from_parts([("Soprano", repeated), ("Alto", roll(1)), ("Tenor", roll(1)), ("Bass", roll(1))])
    assert made is None  # named, but three of the parts hold no notes: not four voices
    made = voices_from_parts([("A", repeated), ("B", roll(1, (55, 0, 32))), ("C", roll(1, (50, 0, 32)))], 3)
    assert notes_of(made)[0] == [[0, 16, 60], [16, 32, 60]]
    assert restore_repeats(np.array([[0, 15, 60], [16, 32, 60], [0, 10, 50]])).tolist() == [
        [0, 16, 60],
        [16, 32, 60],
        [0, 10, 50],
    ]


def file_of(tracks: list[tuple[str, list[tuple[int, int, int]]]], num_quarters: int = 2) -> bytes:
    return tracks_to_midi_bytes([(name, np.array(notes).reshape(-1, 3)) for name, notes in tracks], num_quarters)


def test_read_voices_bytes_says_how_it_read_the_voices(tmp_path):
    chorale = file_of(
        [
            ("Soprano", [(0, 32, 72), (32, 64, 74)]),
            ("Alto", [(0, 64, 67)]),
            ("Tenor", [(0, 32, 64), (32, 64, 64)]),
            ("Bass", [(0, 64, 48)]),
            ("Piano", [(0, 64, 36), (0, 64, 40)]),
        ]
    )
    made, how = read_voices_bytes(chorale)
    assert how == READ_FROM_PARTS
    assert notes_of(made) == [
        [[0, 32, 72], [32, 64, 74]],
        [[0, 64, 67]],
        [[0, 32, 64], [32, 64, 64]],
        [[0, 64, 48]],
    ]
    one_track = file_of([("Keys", [(0, 64, 72), (0, 64, 67), (0, 64, 64), (0, 64, 48)])])
    by_rule, how = read_voices_bytes(one_track)
    assert how == READ_BY_RULE and by_rule.num_voices == 4
    assert [part[:, 2].tolist() for part in by_rule.notes] == [[72], [67], [64], [48]]
    (tmp_path / "chorale.mid").write_bytes(chorale)
    from_file, how = read_voices(tmp_path / "chorale.mid")
    assert how == READ_FROM_PARTS and notes_of(from_file) == notes_of(made)


def test_without_short_notes_lengthens_the_note_before_or_rests():
    made = voices(1, [(0, 12, 60), (12, 14, 62), (20, 22, 64), (22, 32, 65)], [(0, 2, 55), (2, 32, 57)])
    kept = made.without_short_notes(4)
    assert notes_of(kept) == [[[0, 14, 60], [22, 32, 65]], [[2, 32, 57]]]  # a fragment after a rest is dropped
    assert notes_of(made.without_short_notes(1)) == notes_of(made)
    assert all(part.shape[1] == 3 for part in voices(1, [(0, 2, 60)]).without_short_notes(4).notes)


def test_sliced_cuts_notes_at_the_edges_and_concatenate_joins_passages():
    middle = CHORALE.sliced(1, 2)
    assert middle.num_quarters == 1
    assert notes_of(middle) == [[[0, 8, 72]], [[0, 32, 67]], [[16, 24, 62]], [[0, 32, 43]]]
    first = CHORALE.sliced(0, 1)
    assert notes_of(first)[0] == [[16, 32, 72]]
    joined = concatenate([first, middle])
    assert joined.num_quarters == 2
    assert notes_of(joined)[1:3] == notes_of(CHORALE)[1:3]  # no note of the inner voices crossed the cut
    assert notes_of(joined)[0] == [[16, 32, 72], [32, 40, 72]]  # the notes held across it are two now
    assert notes_of(joined)[3] == [[0, 20, 48], [20, 32, 43], [32, 64, 43]]
    keys, _ = joined.lines()
    assert np.array_equal(keys, CHORALE.lines()[0])  # sounding the same keys
    three = concatenate([CHORALE, voices(1, [], [], [], [(0, 32, 36)])])
    assert three.num_quarters == 3 and notes_of(three)[3][-1] == [64, 96, 36]


def test_moved_maps_each_key_and_drops_notes_off_the_keyboard():
    rows = np.arange(88) + 2
    rows[rows >= 88] = -1
    rows[48 - LOWEST_PITCH] = -1  # the Bass's first note has nowhere to go
    moved = CHORALE.moved(rows)
    assert notes_of(moved)[0] == [[16, 40, 74]]
    assert notes_of(moved)[3] == [[20, 64, 45]]
    assert notes_of(CHORALE.transposed(-3))[1] == [[0, 32, 64], [32, 64, 64]]
    with pytest.raises(ValueError, match="88 keys"):
        voices(1, [(0, 32, 100)]).transposed(12).quarters()
