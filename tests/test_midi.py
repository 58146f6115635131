"""The MIDI codec: MIDI -> quarters on small files whose rolls are known by hand, and back."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
    Meter,
    MidiError,
    Tempo,
    TimeSignature,
    drop_short_notes,
    key_range,
    quarters_to_midi_bytes,
    read_meter,
    read_midi,
    read_midi_bytes,
    read_midi_tracks,
    write_midi,
)

MIDDLE_C = 60  # row 39
CORPUS = Path(__file__).resolve().parents[1] / "data" / "midi"

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


# Unisons: two voices on one key. The roll is the union of what sounds; a note starting inside
# another re-strikes the key (the one-step gap before it) and the key sounds until the longer ends.


def test_a_short_note_inside_a_longer_one_on_the_same_key_re_strikes_it_and_the_longer_sounds_on():
    # track 1 holds C4 for 4 beats; track 2 touches C4 at beat 0.5 for half a beat
    data = make_midi([Note(60, 0.0, 4.0, track=1), Note(60, 0.5, 0.5, track=2)])
    assert np.array_equal(read(data), roll(4, (60, 0, 15), (60, 16, 128)))


def test_overlapping_notes_of_two_voices_on_one_key_sound_until_the_later_ends():
    data = make_midi([Note(60, 0.0, 1.5, track=1), Note(60, 1.0, 1.0, track=2)])
    assert np.array_equal(read(data), roll(2, (60, 0, 31), (60, 32, 64)))


def test_two_equal_notes_of_two_voices_are_one_note():
    data = make_midi([Note(60, 1.0, 2.0, track=1), Note(60, 1.0, 2.0, track=2)])
    assert np.array_equal(read(data), roll(2, (60, 0, 64)))


def test_a_note_starting_inside_another_and_ending_with_it_re_strikes_it():
    data = make_midi([Note(60, 0.0, 2.0, track=1), Note(60, 1.0, 1.0, track=2)])
    assert np.array_equal(read(data), roll(2, (60, 0, 31), (60, 32, 64)))


def test_the_longer_note_of_a_unison_outlasts_several_inner_notes_and_round_trips():
    # bwv10.7's close: the soprano holds G4 while the alto touches it twice
    notes = [Note(67, 0.0, 4.0, track=1), Note(67, 1.0, 0.5, track=2), Note(67, 2.0, 1.0, track=2)]
    piece = read_midi_bytes(make_midi(notes))
    assert np.array_equal(piece.quarters, roll(4, (67, 0, 31), (67, 32, 63), (67, 64, 128)))
    assert np.array_equal(read(quarters_to_midi_bytes(piece.quarters)), piece.quarters)


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
    # One track: C4 on channel 0 for beats 0 ... 2, and on channel 1 for beats 1 ... 1.5, then C4
    # on channel 1 again at beat 3. The channel-1 note re-strikes the key, which sounds to beat 2.
    notes = [Note(60, 0.0, 2.0, channel=0), Note(60, 1.0, 0.5, channel=1), Note(60, 3.0, 0.5, channel=1)]
    quarters = read(make_midi(notes, midi_format=0))
    assert np.array_equal(quarters, roll(4, (60, 0, 31), (60, 32, 64), (60, 96, 112)))


def test_a_note_never_released_is_left_out():
    # symusic, like pretty_midi and miditoolkit, keeps only notes that end; the reader used to
    # stop such a note at the end of its track (two chorales of the corpus have one).
    on = mido.Message("note_on", note=60, velocity=90)
    other = mido.Message("note_on", note=62, velocity=90)
    off = mido.Message("note_off", note=62)
    data = midi_bytes([[(0, on), (0, other), (240, off), (480, mido.MetaMessage("marker", text="end"))]])
    piece = read_midi_bytes(data)
    assert np.array_equal(piece.quarters, roll(1, (62, 0, 16)))
    assert piece.notes == 1


def test_a_file_whose_notes_are_never_released_has_no_notes(tmp_path):
    data = midi_bytes([[(0, mido.Message("note_on", note=60, velocity=90)), (480, mido.MetaMessage("marker"))]])
    assert _read_error(tmp_path, data).reason == "no notes"


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


def test_a_longer_header_an_unknown_chunk_and_bytes_after_the_tracks_are_read_past():
    good = make_midi(MUSIC)
    longer_header = good[:4] + (8).to_bytes(4, "big") + good[8:14] + b"\x00\x00" + good[14:]
    unknown_chunk = good[:14] + b"XFIH" + (3).to_bytes(4, "big") + b"abc" + good[14:]
    assert np.array_equal(read(longer_header), read(good))
    assert np.array_equal(read(unknown_chunk), read(good))
    assert np.array_equal(read(good + b"MTrk junk after the last track"), read(good))


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


@pytest.mark.parametrize("program", [None, 0, 52])
def test_write_midi_names_the_general_midi_program(tmp_path, program):
    options = {} if program is None else {"program": program}
    midi = mido.MidiFile(write_midi(roll(1, (60, 0, 32)), tmp_path / "out.mid", **options))
    programs = [message.program for message in midi.tracks[0] if message.type == "program_change"]
    assert programs == [19 if program is None else program]  # 19: church organ, the default


def test_writing_refuses_a_program_outside_general_midi():
    with pytest.raises(ValueError, match="program"):
        quarters_to_midi_bytes(roll(1, (60, 0, 32)), program=128)


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


# --------------------------------------------------------------------------------------------
# Tracks


def named_tracks(*tracks: tuple[str, list[tuple[int, float, float]]], drums: bool = False) -> bytes:
    """A type-1 file at 480 ticks per beat: one track per (name, [(pitch, start beat, beats)])."""
    events = []
    for name, notes in tracks:
        messages = [(0, mido.MetaMessage("track_name", name=name))]
        for pitch, start, beats in notes:
            messages.append((round(start * 480), mido.Message("note_on", note=pitch, velocity=80, channel=9 * drums)))
            messages.append((round((start + beats) * 480), mido.Message("note_off", note=pitch, channel=9 * drums)))
        events.append(sorted(messages, key=lambda event: event[0]))
    return midi_bytes(events)


def test_read_midi_tracks_gives_each_voice_on_the_grid_of_the_whole_file(tmp_path):
    path = tmp_path / "chorale.mid"
    voices = [("Soprano", [(72, 1.0, 1.0), (74, 2.0, 1.5)]), ("Alto", [(67, 1.5, 1.5)]), ("Bass", [(48, 1.25, 0.5)])]
    path.write_bytes(named_tracks(*voices))
    whole = read_midi(path).quarters  # starts in beat 1: the silent first quarter is trimmed
    tracks = read_midi_tracks(path)
    assert [track.name for track in tracks] == ["Soprano", "Alto", "Bass"]
    expected = [roll(3, (72, 0, 32), (74, 32, 80)), roll(3, (67, 16, 64)), roll(3, (48, 8, 24))]
    for track, voice in zip(tracks, expected, strict=True):
        assert track.quarters.dtype == bool and np.array_equal(track.quarters, voice) and track.dropped_notes == 0
    assert np.array_equal(np.logical_or.reduce([track.quarters for track in tracks]), whole)


def test_read_midi_tracks_applies_the_note_rules_within_each_track(tmp_path):
    # C5 in the soprano, then at once in the alto: two notes of one key for the whole file, which
    # loses a step between them, but in each track a note with nothing after it.
    path = tmp_path / "handover.mid"
    path.write_bytes(named_tracks(("Soprano", [(72, 0.0, 1.0)]), ("Alto", [(72, 1.0, 1.0), (60, 0.0, 2.0)])))
    assert np.array_equal(read_midi(path).quarters, roll(2, (72, 0, 31), (72, 32, 64), (60, 0, 64)))
    (_, soprano, _), (_, alto, _) = read_midi_tracks(path)
    assert np.array_equal(soprano, roll(2, (72, 0, 32)))
    assert np.array_equal(alto, roll(2, (72, 32, 64), (60, 0, 64)))


def test_read_midi_tracks_leaves_drums_out_and_keeps_a_track_outside_the_keys(tmp_path):
    path = tmp_path / "band.mid"
    path.write_bytes(named_tracks(("Tune", [(60, 0.0, 1.0)]), ("Whistle", [(120, 0.0, 1.0)])))
    tracks = read_midi_tracks(path)
    assert [track.name for track in tracks] == ["Tune", "Whistle"]
    assert np.array_equal(tracks[0].quarters, roll(1, (60, 0, 32))) and not tracks[1].quarters.any()
    assert (tracks[0].dropped_notes, tracks[1].dropped_notes) == (0, 1)
    drums = tmp_path / "drums.mid"
    drums.write_bytes(
        midi_bytes(
            [
                [(0, mido.Message("note_on", note=60)), (480, mido.Message("note_off", note=60))],
                [(0, mido.Message("note_on", note=36, channel=9)), (960, mido.Message("note_off", note=36, channel=9))],
            ]
        )
    )
    ((_, tune, _),) = read_midi_tracks(drums)
    assert np.array_equal(tune, roll(1, (60, 0, 32)))


@pytest.mark.parametrize(
    "data",
    [b"", b"not MIDI", GOOD[:30], make_midi([Note(10, 0.0, 1.0)]), make_midi([], drum_notes=[Note(36, 0.0, 1.0)])],
    ids=["empty", "not MIDI", "truncated", "outside the keys", "drums only"],
)
def test_read_midi_tracks_refuses_what_read_midi_refuses_in_the_same_words(tmp_path, data: bytes):
    path = tmp_path / "bad.mid"
    path.write_bytes(data)
    with pytest.raises(MidiError) as whole:
        read_midi(path)
    with pytest.raises(MidiError) as tracks:
        read_midi_tracks(path)
    assert str(tracks.value) == str(whole.value)
    with pytest.raises(MidiError, match="missing.mid: cannot read file"):
        read_midi_tracks(tmp_path / "missing.mid")


def test_no_chorale_loses_sound_in_a_unison():
    # Every step a voice sounds, the whole chorale sounds, except the one-step gap before a note
    # that re-strikes the key (a repeated note, or a voice entering on a key another holds).
    for path in sorted(CORPUS.glob("*.mid")):
        whole = read_midi(path).quarters.transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, T]
        voices = np.logical_or.reduce([track.quarters for track in read_midi_tracks(path)])
        voices = voices.transpose(1, 0, 2).reshape(NUM_KEYS, -1)
        onset_after = np.zeros_like(whole)
        onset_after[:, :-1] = whole[:, 1:] & ~whole[:, :-1]  # [k, t]: a note of key k starts at t + 1
        silenced = voices & ~whole & ~onset_after
        assert not silenced.any(), f"{path.name}: {int(silenced.sum())} steps of its voices do not sound"


def test_every_chorale_track_lines_up_with_the_whole_chorale():
    for path in sorted(CORPUS.glob("*.mid"))[::40]:
        whole = read_midi(path).quarters
        tracks = read_midi_tracks(path)
        assert {"Soprano", "Alto", "Tenor", "Bass"} <= {track.name for track in tracks}
        assert all(track.quarters.shape == whole.shape for track in tracks)
        every_track = np.logical_or.reduce([track.quarters for track in tracks])
        assert not (whole & ~every_track).any()  # the whole file only ever shortens a track's notes


# --------------------------------------------------------------------------------------------
# The committed chorales


# (file, quarters, notes, sha256 of the packed quarters) as the codec's own byte-level reader read
# them (git 6269780), before the parser became symusic. Only the leading 16 hex digits are kept.
# bwv1.6 reads as it did but for 37 steps of unisons that now sound on (CODEC_VERSION 4).
CHORALES_AS_READ_BEFORE = [
    ("bwv1.6.mid", 80, 491, "9c442d8f2b7fd34b"),
    ("bwv155.5.mid", 56, 298, "fb2e1b3bb6cbfc7f"),
    ("bwv244.15.mid", 64, 258, "8224f11fb05f88be"),
    ("bwv259.mid", 48, 227, "f75d1aa5d78796b4"),
    ("bwv304.mid", 81, 378, "26293cd358a1d498"),
    ("bwv352.mid", 64, 321, "473684a56da9fc36"),
    ("bwv398.mid", 64, 258, "3c33174e3f873b78"),
    ("bwv47.5.mid", 40, 179, "4065a4bd0aeeae70"),
    ("bwv99.6.mid", 56, 273, "01c636f7374a5e60"),
]


@pytest.mark.parametrize(("name", "num_quarters", "notes", "digest"), CHORALES_AS_READ_BEFORE)
def test_committed_chorales_read_as_they_always_have(name: str, num_quarters: int, notes: int, digest: str):
    piece = read_midi(CORPUS / name)
    assert (len(piece.quarters), piece.notes, piece.dropped_notes) == (num_quarters, notes, 0)
    assert hashlib.sha256(np.packbits(piece.quarters).tobytes()).hexdigest()[:16] == digest


def test_the_two_chorales_with_notes_never_released_lose_those_notes():
    # bwv299 ends with two note-ons that no note-off answers, bwv315 with one; the byte-level
    # reader held them to the end of the track (73 and 69 quarters, 321 and 354 notes).
    bwv299, bwv315 = read_midi(CORPUS / "bwv299.mid"), read_midi(CORPUS / "bwv315.mid")
    assert (len(bwv299.quarters), bwv299.notes) == (72, 319)
    assert (len(bwv315.quarters), bwv315.notes) == (68, 353)


# --------------------------------------------------------------------------------------------
# Meter: time signatures and tempos


def conductor(*events: tuple[int, str, dict]) -> list:
    """Conductor-track events (tick, meta type, fields) for midi_bytes."""
    return [(tick, mido.MetaMessage(kind, **fields)) for tick, kind, fields in events]


def notes_track(*notes: tuple[int, int, int]) -> list:
    """Track events of notes (pitch, onset tick, offset tick), note-offs first at a tick."""
    events = []
    for pitch, on, off in notes:
        events += [
            (on, 1, mido.Message("note_on", note=pitch, velocity=80)),
            (off, 0, mido.Message("note_off", note=pitch)),
        ]
    return [(tick, message) for tick, _, message in sorted(events, key=lambda event: event[:2])]


def test_a_file_without_meter_events_reads_as_4_4_at_120(tmp_path):
    path = tmp_path / "plain.mid"
    path.write_bytes(midi_bytes([notes_track((60, 0, 480))]))
    assert read_meter(path) == Meter((TimeSignature(0.0, 4, 4),), (Tempo(0.0, 120.0),))


def test_the_meter_is_read_on_the_grid_of_the_trimmed_quarters(tmp_path):
    # 3/4 at 72; the music starts on the third beat (two silent quarters trimmed); 60 bpm from quarter 5,
    # 2/4 from quarter 8 (bar lines at 0, 3, 6, 8 in the file); a tempo change at tick 3 snaps to the grid
    meta = conductor(
        (0, "time_signature", {"numerator": 3, "denominator": 4}),
        (0, "set_tempo", {"tempo": 833_333}),
        (2400, "set_tempo", {"tempo": 1_000_000}),
        (3840, "time_signature", {"numerator": 2, "denominator": 4}),
    )
    path = tmp_path / "three.mid"
    path.write_bytes(midi_bytes([meta, notes_track((67, 960, 1440), (69, 1440, 5760))], ticks_per_beat=480))
    assert len(read_midi(path).quarters) == 10
    meter = read_meter(path)
    # the music starts on the last beat of a 3/4 bar: a pickup, its two quarters of rest a lead
    assert meter.time_signatures == (TimeSignature(0.0, 3, 4), TimeSignature(6.0, 2, 4)) and meter.lead == 2
    assert meter.tempos == (Tempo(0.0, 60_000_000 / 833_333), Tempo(3.0, 60.0))
    assert meter.bars(10) == [
        (-2.0, 1.0, TimeSignature(0.0, 3, 4)),
        (1.0, 4.0, TimeSignature(0.0, 3, 4)),
        (4.0, 6.0, TimeSignature(0.0, 3, 4)),  # cut short by the change to 2/4
        (6.0, 8.0, TimeSignature(6.0, 2, 4)),
        (8.0, 10.0, TimeSignature(6.0, 2, 4)),
    ]
    assert meter.bar_lines(10) == [-2.0, 1.0, 4.0, 6.0, 8.0, 10.0]
    assert meter.bar_lines(9) == [-2.0, 1.0, 4.0, 6.0, 8.0]  # the last bar does not end inside


def test_cutting_a_meter_keeps_its_bar_lines_and_what_is_in_force():
    meter = Meter((TimeSignature(0.0, 3, 4), TimeSignature(6.0, 6, 8)), (Tempo(0.0, 80.0), Tempo(4.0, 70.0)))
    # one quarter into the bar from 3 to 6: a pickup of two quarters under 3/4, its first quarter a rest
    assert meter.after(4) == Meter((TimeSignature(0.0, 3, 4), TimeSignature(2.0, 6, 8)), (Tempo(0.0, 70.0),), 1)
    # half a quarter into it: the rest of the bar is a short bar of its own
    assert meter.after(3.5).time_signatures == (TimeSignature(0.0, 5, 8), TimeSignature(2.5, 6, 8))
    assert meter.after(7) == Meter((TimeSignature(0.0, 6, 8),), (Tempo(0.0, 70.0),), 1)
    assert (
        meter.after(4).after(1)
        == meter.after(5)
        == Meter((TimeSignature(0.0, 3, 4), TimeSignature(1.0, 6, 8)), (Tempo(0.0, 70.0),), 2)
    )
    assert meter.after(3) == Meter(
        (TimeSignature(0.0, 3, 4), TimeSignature(3.0, 6, 8)), (Tempo(0.0, 80.0), Tempo(1.0, 70.0))
    )
    assert meter.until(4) == Meter((TimeSignature(0.0, 3, 4),), (Tempo(0.0, 80.0),))
    with pytest.raises(ValueError, match="first at quarter 0"):
        Meter((TimeSignature(1.0, 3, 4),))


def test_quarters_are_written_with_their_meter_and_read_back_the_same(tmp_path):
    meter = Meter((TimeSignature(0.0, 1, 4), TimeSignature(1.0, 3, 4)), (Tempo(0.0, 75.0), Tempo(2.5, 48.0)))
    quarters = roll(4, (67, 0, 32), (69, 32, 100), (71, 100, 128))
    path = write_midi(quarters, tmp_path / "out.mid", meter=meter)
    midi = mido.MidiFile(path)
    signatures = [(m.numerator, m.denominator) for m in midi.tracks[0] if m.type == "time_signature"]
    assert signatures == [(1, 4), (3, 4)]
    assert [m.tempo for m in midi.tracks[0] if m.type == "set_tempo"] == [800_000, 1_250_000]
    assert read_meter(path) == meter
    assert np.array_equal(read_midi(path).quarters, quarters)
    # changes from the end of the music on are left out of the file
    later = Meter((TimeSignature(0.0, 3, 4), TimeSignature(4.0, 2, 4)), (Tempo(0.0, 75.0), Tempo(4.0, 50.0)))
    assert read_meter(write_midi(quarters, tmp_path / "later.mid", meter=later)) == later.until(4)


def test_a_melody_is_written_as_a_track_of_its_own_before_the_harmony(tmp_path):
    melody = roll(2, (72, 0, 31), (72, 32, 64))
    music = melody | roll(2, (60, 0, 64), (72, 0, 0))
    path = write_midi(music, tmp_path / "two.mid", program=52, melody=melody, melody_name="Soprano")
    tracks = read_midi_tracks(path)
    assert [track.name for track in tracks] == ["Soprano", "Harmony"]
    assert np.array_equal(tracks[0].quarters, melody) and np.array_equal(tracks[1].quarters, music & ~melody)
    programs = [m.program for track in mido.MidiFile(path).tracks for m in track if m.type == "program_change"]
    assert programs == [52, 52]
    assert np.array_equal(read_midi(path).quarters, music)
    with pytest.raises(ValueError, match="inside the music"):
        quarters_to_midi_bytes(roll(2, (60, 0, 64)), melody=melody)


def test_writing_refuses_a_tempo_midi_cannot_hold():
    # 3 beats per minute is more than 2**24 microseconds per quarter
    with pytest.raises(ValueError, match="tempo must be within 4 ... 1000"):
        quarters_to_midi_bytes(roll(1, (60, 0, 32)), tempo_bpm=3)
