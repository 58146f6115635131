"""The MIDI codec: MIDI -> quarters on small files whose rolls are known by hand, and back."""

from __future__ import annotations

import mido
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from midi_files import Note, make_midi, midi_bytes, roll, with_header

from bachsformer.errors import BachsformerError
from bachsformer.midi import (
    LOWEST_PITCH,
    NUM_KEYS,
    STEPS_PER_QUARTER,
    MidiError,
    drop_short_notes,
    key_range,
    quarters_to_midi_bytes,
    read_midi,
    read_midi_bytes,
    write_midi,
)

MIDDLE_C = 60  # row 39

# A bar of music on the grid every resolution below can hold exactly: eighths, a triplet, a chord.
MUSIC = [
    Note(60, 0.0, 1.0),
    Note(64, 0.0, 0.5),
    Note(67, 0.5, 0.5),
    Note(72, 1.0, 1 / 3),
    Note(71, 1 + 1 / 3, 1 / 3),
    Note(69, 1 + 2 / 3, 1 / 3),
    Note(48, 2.0, 2.0),
    Note(62, 2.125, 0.875),
    Note(65, 3.0, 1.0),
]


def read(data: bytes, **kwargs) -> np.ndarray:
    return read_midi_bytes(data, "test.mid", **kwargs).quarters


def _runs(quarters: np.ndarray, pitch: int) -> int:
    """Number of notes (maximal runs of set steps) of `pitch`."""
    row = quarters[:, pitch - LOWEST_PITCH].reshape(-1).astype(np.int8)
    return int((np.diff(np.concatenate([[0], row])) == 1).sum())


# --------------------------------------------------------------------------------------------
# Round trip


@st.composite
def rolls(draw) -> np.ndarray:
    """Random binary rolls [Q, 88, 32] whose first and last quarters are not silent."""
    num_quarters = draw(st.integers(1, 6))
    density = draw(st.sampled_from([0.001, 0.01, 0.05, 0.2, 0.5, 0.9, 0.99]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    quarters = rng.random((num_quarters, NUM_KEYS, STEPS_PER_QUARTER)) < density
    for quarter in (0, num_quarters - 1):
        quarters[quarter, draw(st.integers(0, NUM_KEYS - 1)), draw(st.integers(0, STEPS_PER_QUARTER - 1))] = True
    return quarters


@settings(max_examples=60, deadline=None)
@given(rolls())
def test_quarters_to_midi_to_quarters_is_the_identity(quarters: np.ndarray):
    piece = read_midi_bytes(quarters_to_midi_bytes(quarters))
    assert piece.quarters.dtype == bool
    assert np.array_equal(piece.quarters, quarters)
    assert piece.dropped_notes == 0


def test_round_trip_of_every_key_and_both_edges_of_every_quarter():
    quarters = np.zeros((3, NUM_KEYS, STEPS_PER_QUARTER), dtype=bool)
    quarters[:, :, 0] = quarters[:, :, -1] = True  # notes crossing quarter boundaries on all 88 keys
    quarters[1, ::2, 10] = True  # one-step notes
    assert np.array_equal(read(quarters_to_midi_bytes(quarters)), quarters)


def test_leading_and_trailing_silent_quarters_are_trimmed():
    music = np.zeros((2, NUM_KEYS, STEPS_PER_QUARTER), dtype=bool)
    music[0, 39, 5:20] = music[1, 40, 30] = True
    padded = np.concatenate([np.zeros((3, NUM_KEYS, STEPS_PER_QUARTER), bool), music, np.zeros_like(music)])
    assert np.array_equal(read(quarters_to_midi_bytes(padded)), music)
    # The same from a file: a note at beat 7.25 is read into the first (and only) quarter.
    assert np.array_equal(read(make_midi([Note(60, 7.25, 0.5)])), roll(1, (60, 8, 24)))


def test_trailing_quarters_left_silent_by_an_overlap_cut_are_trimmed():
    # track 1 holds C4 for 4 beats; track 2 restarts C4 at beat 0.5 for half a beat
    data = make_midi([Note(60, 0.0, 4.0, track=1), Note(60, 0.5, 0.5, track=2)])
    assert np.array_equal(read(data), roll(1, (60, 0, 15), (60, 16, 32)))


# --------------------------------------------------------------------------------------------
# Time grid


@pytest.mark.parametrize("ticks_per_beat", [96, 120, 240, 480, 1024])
def test_the_same_music_at_any_resolution_gives_the_same_quarters(ticks_per_beat: int):
    expected = read(make_midi(MUSIC, ticks_per_beat=384))
    assert expected.shape == (4, NUM_KEYS, STEPS_PER_QUARTER)
    assert np.array_equal(read(make_midi(MUSIC, ticks_per_beat=ticks_per_beat)), expected)


def test_performed_ticks_snap_to_the_nearest_step():
    # At 480 ticks per beat a step is 15 ticks: 7 ticks round down to step 0, 8 ticks up to step 1.
    def tick(t: int) -> float:
        return t / 480

    notes = [
        Note(60, tick(7), tick(473 - 7)),  # 7 -> step 0, 473 -> 31.53 -> step 32
        Note(62, tick(8), tick(472 - 8)),  # 8 -> step 1, 472 -> 31.47 -> step 31
        Note(64, tick(22), tick(38 - 22)),  # 22 -> 1.47 -> step 1, 38 -> 2.53 -> step 3
        Note(65, tick(23), tick(37 - 23)),  # 23 -> 1.53 -> step 2, 37 -> 2.47 -> step 2 (at least one step)
        Note(67, tick(15), tick(15)),  # exactly step 1
    ]
    expected = roll(1, (60, 0, 32), (62, 1, 31), (64, 1, 3), (65, 2, 3), (67, 1, 2))
    assert np.array_equal(read(make_midi(notes)), expected)


def test_tempo_changes_do_not_move_notes_on_the_beat_grid():
    steady = read(make_midi(MUSIC, tempo_changes=[(0.0, 120.0)]))
    changing = read(make_midi(MUSIC, tempo_changes=[(0.0, 60.0), (1.0, 200.0), (2.5, 33.0), (3.0, 140.0)]))
    assert np.array_equal(changing, steady)
    assert np.array_equal(read(make_midi(MUSIC, midi_format=0, tempo_changes=[(0.0, 50.0), (1.5, 180.0)])), steady)


# --------------------------------------------------------------------------------------------
# Exact positions and note rules


def test_middle_c_on_the_offbeat_lands_on_row_39_steps_16_to_47():
    quarters = read(make_midi([Note(MIDDLE_C, 0.5, 1.0)]))
    expected = np.zeros((2, NUM_KEYS, STEPS_PER_QUARTER), dtype=bool)
    expected[0, 39, 16:32] = True
    expected[1, 39, 0:16] = True  # the note continues into the next quarter
    assert np.array_equal(quarters, expected)


def test_a_note_crossing_several_quarter_boundaries_continues_in_each():
    quarters = read(make_midi([Note(21, 0.75, 2.5), Note(108, 0.0, 0.25)]))
    assert np.array_equal(quarters, roll(4, (21, 24, 104), (108, 0, 8)))
    assert quarters[1, 0].all() and quarters[2, 0].all()


def test_lowest_and_highest_keys_are_rows_0_and_87():
    quarters = read(make_midi([Note(21, 0.0, 1.0), Note(108, 0.0, 1.0)]))
    assert quarters[0, 0].all() and quarters[0, NUM_KEYS - 1].all()
    assert quarters.sum() == 2 * STEPS_PER_QUARTER


def test_note_on_with_velocity_zero_is_a_note_off():
    notes = [Note(60, 0.0, 0.5), Note(60, 1.0, 0.25), Note(64, 0.25, 1.0)]
    piece = read_midi_bytes(make_midi(notes, velocity_zero_off=True))
    assert np.array_equal(piece.quarters, roll(2, (60, 0, 16), (60, 32, 40), (64, 8, 40)))
    assert piece.notes == 3


@pytest.mark.parametrize("midi_format", [0, 1])
def test_type_0_and_type_1_files_read_alike(midi_format: int):
    notes = [note._replace(track=number % 3) for number, note in enumerate(MUSIC)]
    expected = read(make_midi(MUSIC, midi_format=1))  # everything in one note track
    assert np.array_equal(read(make_midi(notes, midi_format=midi_format)), expected)


def test_notes_on_several_tracks_and_channels_are_merged():
    notes = [
        Note(60, 0.0, 1.0, channel=0, track=1),
        Note(64, 0.5, 1.0, channel=3, track=2),
        Note(67, 1.0, 1.0, channel=15, track=3),
    ]
    piece = read_midi_bytes(make_midi(notes))
    assert np.array_equal(piece.quarters, roll(2, (60, 0, 32), (64, 16, 48), (67, 32, 64)))
    assert piece.notes == 3


def test_note_offs_pair_with_note_ons_of_their_own_channel():
    # One track: C4 on channel 0 for beats 0 ... 2, and on channel 1 for beats 1 ... 1.5. Pairing
    # by pitch alone would end the channel-0 note at 1.5 and the channel-1 note at 2.
    notes = [Note(60, 0.0, 2.0, channel=0), Note(60, 1.0, 0.5, channel=1)]
    quarters = read(make_midi(notes, midi_format=0))
    assert np.array_equal(quarters, roll(2, (60, 0, 31), (60, 32, 48)))


def test_a_note_still_sounding_at_the_end_of_its_track_stops_there():
    on = mido.Message("note_on", note=60, velocity=90)
    other = mido.Message("note_on", note=62, velocity=90)
    off = mido.Message("note_off", note=62)
    data = midi_bytes([[(0, on), (0, other), (240, off), (480, mido.MetaMessage("marker", text="end"))]])
    assert np.array_equal(read(data), roll(1, (60, 0, 32), (62, 0, 16)))


def test_overlapping_notes_of_one_pitch_stay_two_notes():
    # on C4 at 0, on C4 at 0.5, off at 1, off at 1.5: first in, first out, then the first note
    # loses its last step(s) to leave a gap before the second.
    notes = [Note(60, 0.0, 1.0), Note(60, 0.5, 1.0)]
    piece = read_midi_bytes(make_midi(notes))
    assert np.array_equal(piece.quarters, roll(2, (60, 0, 15), (60, 16, 48)))
    assert piece.notes == 2
    assert _runs(piece.quarters, 60) == 2
    assert np.array_equal(read(quarters_to_midi_bytes(piece.quarters)), piece.quarters)


def test_a_note_repeated_where_the_previous_ended_stays_two_notes():
    piece = read_midi_bytes(make_midi([Note(60, 0.0, 1.0), Note(60, 1.0, 1.0)]))
    assert np.array_equal(piece.quarters, roll(2, (60, 0, 31), (60, 32, 64)))  # gap at step 31
    assert _runs(piece.quarters, 60) == 2
    again = read(quarters_to_midi_bytes(piece.quarters))
    assert np.array_equal(again, piece.quarters)


def test_two_notes_of_one_pitch_starting_together_are_one_note_the_longer():
    data = make_midi([Note(60, 0.0, 0.5, track=1), Note(60, 0.0, 1.0, track=2)])
    assert np.array_equal(read(data), roll(1, (60, 0, 32)))


@pytest.mark.parametrize("ticks", [1, 7])
def test_a_note_shorter_than_one_step_covers_one_step(ticks: int):
    quarters = read(make_midi([Note(60, 0.0, 1.0), Note(64, 0.5, ticks / 480)]))
    assert np.array_equal(quarters, roll(1, (60, 0, 32), (64, 16, 17)))


def test_a_note_of_zero_length_covers_one_step():
    on, off = mido.Message("note_on", note=60, velocity=90), mido.Message("note_off", note=60)
    data = midi_bytes([[(96, on), (96, off), (480, on.copy(note=64)), (960, off.copy(note=64))]])
    assert np.array_equal(read(data), roll(2, (60, 6, 7), (64, 32, 64)))


def test_drum_notes_are_left_out():
    piece = read_midi_bytes(make_midi([Note(60, 0.0, 1.0)], drum_notes=[Note(36, 0.0, 2.0), Note(42, 0.5, 0.25)]))
    assert np.array_equal(piece.quarters, roll(1, (60, 0, 32)))
    assert piece.notes == 1
    assert piece.dropped_notes == 0


def test_pitches_outside_the_88_keys_are_dropped_and_counted():
    notes = [Note(20, 0.0, 1.0), Note(21, 0.0, 1.0), Note(108, 0.0, 1.0), Note(109, 0.0, 1.0), Note(0, 1, 1)]
    piece = read_midi_bytes(make_midi(notes, midi_format=0))
    assert np.array_equal(piece.quarters, roll(1, (21, 0, 32), (108, 0, 32)))
    assert piece.notes == 2
    assert piece.dropped_notes == 3


# --------------------------------------------------------------------------------------------
# Bad files


def _read_error(tmp_path, data: bytes, name: str = "bad piece.mid", **kwargs) -> MidiError:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(MidiError) as raised:
        read_midi(path, **kwargs)
    error = raised.value
    assert isinstance(error, ValueError) and isinstance(error, BachsformerError)
    message = str(error)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(str(path)) and name in message
    assert error.reason and message.endswith(error.reason)
    return error


GOOD = make_midi([Note(60, 0.0, 1.0, track=1), Note(64, 1.0, 1.0, track=2)])


@pytest.mark.parametrize(
    "data",
    [
        bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)),
        b"X: 1\nT: a folk tune in ABC notation\nK: G\n|: GABc dedB | dedB dedB :|\n",
        b"MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
    ],
    ids=["random bytes", "text", "track chunk without a header"],
)
def test_a_file_that_is_not_midi_is_refused(tmp_path, data: bytes):
    assert "not a MIDI file" in _read_error(tmp_path, data).reason


@pytest.mark.parametrize("cut", [14, 20, 22, 30, len(GOOD) // 2, len(GOOD) - 20, len(GOOD) - 1])
def test_a_truncated_file_is_refused(tmp_path, cut: int):
    assert "truncated" in _read_error(tmp_path, GOOD[:cut]).reason


@pytest.mark.parametrize("cut", [1, 4, 8, 13])
def test_a_file_cut_inside_its_header_is_refused(tmp_path, cut: int):
    _read_error(tmp_path, GOOD[:cut])


def test_an_empty_file_is_refused(tmp_path):
    assert _read_error(tmp_path, b"").reason == "empty file"


def test_a_missing_file_is_refused_naming_it(tmp_path):
    with pytest.raises(MidiError, match="missing.mid: cannot read file"):
        read_midi(tmp_path / "missing.mid")


def test_a_valid_file_without_notes_is_refused(tmp_path):
    data = midi_bytes([[(0, mido.MetaMessage("set_tempo", tempo=500_000)), (480, mido.Message("program_change"))]])
    assert _read_error(tmp_path, data).reason == "no notes"


def test_a_file_with_only_drums_and_notes_outside_the_keys_is_refused(tmp_path):
    data = make_midi([Note(10, 0.0, 1.0), Note(120, 0.0, 1.0)], drum_notes=[Note(36, 0.0, 1.0)])
    assert _read_error(tmp_path, data).reason == "no notes inside the 88 keys (2 outside)"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (with_header(GOOD, header_length=2), "header chunk too short"),
        (with_header(GOOD, header_length=0), "header chunk too short"),
        (with_header(GOOD, header_length=2**31), "truncated"),
        (with_header(GOOD, division=0xE250), "SMPTE"),  # -30 frames per second, 80 ticks per frame
        (with_header(GOOD, division=0), "time division of 0"),
        (GOOD[:8] + b"\x00\x03" + GOOD[10:], "unknown MIDI format 3"),
    ],
    ids=["short header", "zero header", "huge header", "SMPTE division", "zero division", "format 3"],
)
def test_an_unreadable_header_is_refused(tmp_path, data: bytes, reason: str):
    assert reason in _read_error(tmp_path, data).reason


@pytest.mark.parametrize(
    ("track", "reason"),
    [
        (b"\x00\x3c\x40", "running status"),  # a data byte before any status byte
        (b"\x00\x90\x3c", "truncated channel message"),
        (b"\x00\xff\x01", "truncated variable-length number"),
        (b"\x00\xff\x01\x10abc", "meta event runs past the end"),
        (b"\x00\xf0\x05\x7e", "sysex event runs past the end"),
        (b"\x80\x80\x80\x80\x00\x90\x3c\x40", "longer than 4 bytes"),
        (b"\x00\xf8", "unexpected status byte 0xF8"),
        (b"\x00\x90\x3c\x40\x00\xf0\x01\xf7\x00\x3c\x00", "running status"),  # sysex cancels running status
    ],
)
def test_a_corrupt_track_is_refused_naming_the_track(tmp_path, track: bytes, reason: str):
    data = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk" + len(track).to_bytes(4, "big") + track
    error = _read_error(tmp_path, data)
    assert error.reason.startswith("track 1: ") and reason in error.reason


def test_a_file_longer_than_max_quarters_is_refused(tmp_path):
    data = make_midi([Note(60, 0.5, 1.0), Note(62, 3.0, 2.0)])  # five quarters: 0 ... 4
    assert read_midi_bytes(data, max_quarters=5).quarters.shape[0] == 5
    assert _read_error(tmp_path, data, max_quarters=4).reason == "5 quarters long, over the limit of 4"


def test_a_file_claiming_an_absurd_length_is_refused_before_allocating(tmp_path):
    huge = midi_bytes([[(0, mido.Message("note_on", note=60)), (2**27, mido.Message("note_off", note=60))]], 24)
    assert "over the limit" in _read_error(tmp_path, huge).reason


# --------------------------------------------------------------------------------------------
# Writing


def test_write_midi_writes_one_piano_track_at_the_given_tempo(tmp_path):
    quarters = roll(2, (60, 0, 20), (67, 16, 64))
    path = write_midi(quarters, tmp_path / "out.mid", tempo_bpm=90)
    midi = mido.MidiFile(path)
    assert midi.ticks_per_beat % 32 == 0
    assert len(midi.tracks) == 1
    tempos = [message.tempo for message in midi.tracks[0] if message.type == "set_tempo"]
    assert tempos == [mido.bpm2tempo(90)]
    (meter,) = [message for message in midi.tracks[0] if message.type == "time_signature"]
    assert (meter.numerator, meter.denominator) == (4, 4)
    assert np.array_equal(read_midi(path).quarters, quarters)


def test_write_midi_refuses_to_overwrite_an_existing_file(tmp_path):
    path = tmp_path / "taken.mid"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        write_midi(roll(1, (60, 0, 32)), path)
    assert path.read_bytes() == b"keep me"


def test_writing_refuses_a_tempo_out_of_range():
    with pytest.raises(ValueError, match="tempo"):
        quarters_to_midi_bytes(roll(1, (60, 0, 32)), tempo_bpm=0)


def test_drop_short_notes_removes_only_the_short_ones_across_quarter_boundaries():
    music = roll(2, (60, 0, 3), (60, 10, 40), (62, 30, 33), (64, 31, 36))
    cleaned = drop_short_notes(music, 4)
    assert np.array_equal(cleaned, roll(2, (60, 10, 40), (64, 31, 36)))
    assert np.array_equal(drop_short_notes(music, 1), music)


def test_key_range_gives_each_quarters_lowest_and_highest_sounding_key():
    music = roll(3, (21, 0, 40), (60, 70, 80), (108, 70, 71))  # A0 over quarters 0-1; C4 and C8 in quarter 2
    lowest, highest = key_range(music)
    assert lowest.tolist() == [0, 0, 39] and highest.tolist() == [0, 0, 87]
    lowest, highest = key_range(np.zeros((2, NUM_KEYS, STEPS_PER_QUARTER), dtype=bool))
    assert lowest.tolist() == [NUM_KEYS, NUM_KEYS] and highest.tolist() == [-1, -1]  # silent: any shift fits
