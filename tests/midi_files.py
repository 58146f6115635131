"""Synthetic Standard MIDI Files built in memory with mido, for the codec and corpus tests.

Notes are written in beats and converted to ticks at the resolution asked for, so one piece of
music can be written at any ticks per beat, as type 0 or type 1, with tempo changes, drums,
several tracks and channels, or note-offs spelled as note-ons of velocity 0.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import mido
import numpy as np

from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, STEPS_PER_QUARTER

DRUM_CHANNEL = 9


class Note(NamedTuple):
    """A note in beats: starts at `start`, lasts `duration`, on `track` (type 1) and `channel`."""

    pitch: int
    start: float
    duration: float
    channel: int = 0
    track: int = 0


def midi_bytes(
    tracks: Sequence[Sequence[tuple[int, mido.Message | mido.MetaMessage]]],
    ticks_per_beat: int = 480,
    midi_format: int = 1,
) -> bytes:
    """A MIDI file of `tracks`, each a list of (absolute tick, message) in the order to write them."""
    midi = mido.MidiFile(type=midi_format, ticks_per_beat=ticks_per_beat)
    for events in tracks:
        track = mido.MidiTrack()
        tick = 0
        for event_tick, message in events:
            track.append(message.copy(time=event_tick - tick))
            tick = event_tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        midi.tracks.append(track)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def make_midi(
    notes: Iterable[Note | tuple],
    ticks_per_beat: int = 480,
    midi_format: int = 1,
    tempo_changes: Sequence[tuple[float, float]] = ((0.0, 120.0),),
    drum_notes: Iterable[Note | tuple] = (),
    velocity_zero_off: bool = False,
) -> bytes:
    """A MIDI file holding `notes` (and `drum_notes` on the drum channel, in a track of their own).

    Times are in beats, rounded to the nearest tick. `tempo_changes` are (beat, beats per minute).
    Type 1 gets a conductor track (tempo, 4/4) and one track per `Note.track`; type 0 puts every
    event in one track. Note-offs come before note-ons at the same tick, so a note may start where
    another of its pitch ends.
    """
    notes = [Note(*note) for note in notes]
    notes += [Note(*note)._replace(channel=DRUM_CHANNEL, track=-1) for note in drum_notes]

    def tick(beat: float) -> int:
        return round(beat * ticks_per_beat)

    conductor = [(tick(beat), mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))) for beat, bpm in tempo_changes]
    conductor.insert(0, (0, mido.MetaMessage("time_signature", numerator=4, denominator=4)))
    note_tracks: dict[int, list[tuple[int, int, mido.Message]]] = {}
    for note in notes:
        on, off = tick(note.start), tick(note.start + note.duration)
        if off <= on:
            raise ValueError(f"{note} is shorter than one tick at {ticks_per_beat} ticks per beat")
        note_off = (
            mido.Message("note_on", note=note.pitch, velocity=0, channel=note.channel)
            if velocity_zero_off
            else mido.Message("note_off", note=note.pitch, velocity=64, channel=note.channel)
        )
        events = note_tracks.setdefault(0 if midi_format == 0 else note.track, [])
        events.append((on, 1, mido.Message("note_on", note=note.pitch, velocity=80, channel=note.channel)))
        events.append((off, 0, note_off))

    def in_order(events: list[tuple[int, int, mido.Message]]) -> list[tuple[int, mido.Message]]:
        return [(event_tick, message) for event_tick, _, message in sorted(events, key=lambda e: e[:2])]

    if midi_format == 0:
        merged = [(t, -1, message) for t, message in conductor] + note_tracks.get(0, [])
        return midi_bytes([in_order(merged)], ticks_per_beat, 0)
    tracks = [conductor] + [in_order(note_tracks[number]) for number in sorted(note_tracks)]
    return midi_bytes(tracks, ticks_per_beat, midi_format)


def roll(num_quarters: int, *notes: tuple[int, int, int]) -> np.ndarray:
    """The expected quarters [Q, 88, 32] of notes given as (pitch, first step, end step) on one timeline."""
    timeline = np.zeros((NUM_KEYS, num_quarters * STEPS_PER_QUARTER), dtype=bool)
    for pitch, first, end in notes:
        timeline[pitch - LOWEST_PITCH, first:end] = True
    return timeline.reshape(NUM_KEYS, num_quarters, STEPS_PER_QUARTER).transpose(1, 0, 2)


def with_header(data: bytes, header_length: int | None = None, division: int | None = None) -> bytes:
    """`data` with its MThd length field or its time division field replaced."""
    data = bytearray(data)
    if header_length is not None:
        data[4:8] = struct.pack(">I", header_length)
    if division is not None:
        data[12:14] = struct.pack(">H", division)
    return bytes(data)
