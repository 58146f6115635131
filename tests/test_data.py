"""The corpus (reading, skipping, caching), its split, transposition, both datasets and `scan`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from midi_files import Note, make_midi, roll

import bachsformer.data
from bachsformer.data import (
    SPLIT_NOTE,
    CodeWindowDataset,
    CorpusError,
    CorpusPiece,
    EncodedPiece,
    VoiceQuarterDataset,
    is_validation,
    load_corpus,
    main,
    split,
    transpose_lines,
    transpose_range,
)
from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, STEPS_PER_QUARTER, MidiError
from bachsformer.voices import READ_BY_RULE, READ_FROM_PARTS, SILENCE, Voices

TWO_QUARTERS = make_midi([Note(60, 0.0, 1.0), Note(64, 0.5, 1.0), Note(67, 1.0, 1.0)])  # C4 E4 G4
ONE_QUARTER = make_midi([Note(57, 0.0, 0.5, track=1), Note(62, 0.5, 0.5, track=2), Note(110, 0.0, 1.0)])


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """Two good files (one in a subfolder), two bad ones, and a file that is not MIDI by name."""
    return write(
        tmp_path / "midi",
        {
            "a.mid": TWO_QUARTERS,
            "sub/b.MIDI": ONE_QUARTER,
            "bad.mid": b"this is not a MIDI file",
            "empty.mid": b"",
            "notes.txt": TWO_QUARTERS,
        },
    )


def cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("*.npz"))


# --------------------------------------------------------------------------------------------
# load_corpus


def test_load_corpus_reads_good_files_and_reports_each_bad_one(corpus_dir: Path):
    skipped: list[MidiError] = []
    pieces = load_corpus(corpus_dir, on_skip=skipped.append)
    assert [piece.name for piece in pieces] == ["a.mid", "sub/b.MIDI"]
    # no parts: the voicing rule's voices, whose union is the piece; its E4 passes from the Soprano to the
    # Bass at step 32, where the Bass strikes it again
    assert [notes.tolist() for notes in pieces[0].voices.notes] == [
        [[0, 16, 60], [16, 32, 64], [32, 64, 67]],
        [],
        [],
        [[0, 32, 60], [32, 48, 64]],
    ]
    assert np.array_equal(pieces[0].quarters, roll(2, (60, 0, 32), (64, 16, 31), (64, 32, 48), (67, 32, 64)))
    assert (pieces[0].notes, pieces[0].dropped_notes) == (3, 0)
    assert np.array_equal(pieces[1].quarters, roll(1, (57, 0, 16), (62, 16, 32)))
    assert (pieces[1].notes, pieces[1].dropped_notes) == (2, 1)
    assert [Path(error.source).name for error in skipped] == ["bad.mid", "empty.mid"]
    assert [error.reason for error in skipped] == ["not a MIDI file (no MThd header)", "empty file"]
    assert all(isinstance(error, MidiError) and str(corpus_dir) in str(error) for error in skipped)


def test_load_corpus_reports_skipped_files_on_stderr_by_default(corpus_dir: Path, capsys):
    load_corpus(corpus_dir)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"note: a.mid: {SPLIT_NOTE}",
        f"skipped {corpus_dir / 'bad.mid'}: not a MIDI file (no MThd header)",
        f"skipped {corpus_dir / 'empty.mid'}: empty file",
        f"note: sub/b.MIDI: {SPLIT_NOTE}",
    ]


def test_a_corpus_without_a_readable_file_is_an_error(tmp_path: Path):
    folder = write(tmp_path / "midi", {"bad.mid": b"MThd", "empty.mid": b"", "good.txt": TWO_QUARTERS})
    skipped: list[MidiError] = []
    with pytest.raises(CorpusError, match="none of 2 MIDI files could be read"):
        load_corpus(folder, on_skip=skipped.append)
    assert len(skipped) == 2
    with pytest.raises(CorpusError, match="none of 0"):
        load_corpus(write(tmp_path / "nothing", {"readme.txt": b""}))
    with pytest.raises(CorpusError, match="no such folder"):
        load_corpus(tmp_path / "missing")


def test_a_second_load_reads_from_the_cache(corpus_dir: Path, tmp_path: Path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = load_corpus(corpus_dir, cache_dir, on_skip=lambda error: None)
    (cache,) = cache_files(cache_dir)  # one file for the folder, holding the readable files
    with np.load(cache) as stored:
        assert len(stored["digests"]) == 2  # bad files are read again next time
    assert not list(cache_dir.rglob("*.tmp.npz"))

    def no_parsing(data, *args):
        if not data or not data.startswith(b"MThd"):  # the two bad files are not cached
            raise MidiError(args[0], "bad")
        raise AssertionError("parsed a file that is in the cache")

    monkeypatch.setattr(bachsformer.data, "read_piece_voices", no_parsing)
    second = load_corpus(corpus_dir, cache_dir, on_skip=lambda error: None)
    assert [p.name for p in second] == [p.name for p in first]
    for cached, parsed in zip(first, second, strict=True):
        assert cached.quarters.dtype == bool and cached.quarters.shape == parsed.quarters.shape
        assert np.array_equal(cached.quarters, parsed.quarters)
        assert (cached.notes, cached.dropped_notes) == (parsed.notes, parsed.dropped_notes)


def test_a_changed_file_gets_a_new_cache_entry(corpus_dir: Path, tmp_path: Path):
    cache_dir = tmp_path / "cache"
    load_corpus(corpus_dir, cache_dir, on_skip=lambda error: None)
    (before,) = cache_files(cache_dir)
    digests_before = set(map(bytes, np.load(before)["digests"]))
    (corpus_dir / "a.mid").write_bytes(make_midi([Note(72, 0.0, 0.25)]))
    pieces = load_corpus(corpus_dir, cache_dir, on_skip=lambda error: None)
    assert np.array_equal(pieces[0].quarters, roll(1, (72, 0, 8)))
    (after,) = cache_files(cache_dir)
    digests_after = set(map(bytes, np.load(after)["digests"]))
    assert len(digests_after) == 2 and len(digests_before & digests_after) == 1  # b kept, a replaced


def test_the_cache_is_keyed_by_the_length_limit_too(corpus_dir: Path, tmp_path: Path):
    cache_dir = tmp_path / "cache"
    load_corpus(corpus_dir, cache_dir, on_skip=lambda error: None)
    skipped: list[MidiError] = []
    pieces = load_corpus(corpus_dir, cache_dir, max_quarters=1, on_skip=skipped.append)
    assert [piece.name for piece in pieces] == ["sub/b.MIDI"]
    assert "2 quarters long, over the limit of 1" in [error.reason for error in skipped]


# --------------------------------------------------------------------------------------------
# Split


NAMES = [f"chorale_{number:03d}.mid" for number in range(4000)]


def piece(name: str, pitch: int = 60) -> CorpusPiece:
    return CorpusPiece(name, roll(1, (pitch, 0, 32)), 1, 0)


def test_the_split_is_deterministic_and_holds_out_about_the_fraction():
    held_out = [name for name in NAMES if is_validation(name, 0.1)]
    assert held_out == [name for name in NAMES if is_validation(name, 0.1)]
    assert 0.08 < len(held_out) / len(NAMES) < 0.12
    assert 0.27 < sum(is_validation(name, 0.3) for name in NAMES) / len(NAMES) < 0.33
    assert not any(is_validation(name, 0.0) for name in NAMES)
    assert all(is_validation(name, 1.0) for name in NAMES)
    # a larger fraction only adds files, so a file once held out stays held out
    assert set(held_out) <= {name for name in NAMES if is_validation(name, 0.2)}


def test_the_split_is_the_same_in_every_process_and_version():
    # Pinned, so that a change of hash (or Python's per-process `hash`) cannot silently move files
    # between training and validation and make validation numbers incomparable across runs.
    held_out = [name for name in NAMES[:100] if is_validation(name, 0.1)]
    assert held_out == [f"chorale_{number:03d}.mid" for number in (8, 27, 30, 46, 78, 85)]


def test_split_depends_only_on_the_file_name():
    pieces = [piece(name) for name in NAMES[:300]]
    train, validation = split(pieces, 0.25)
    assert sorted(p.name for p in train + validation) == sorted(NAMES[:300])
    assert {p.name for p in train}.isdisjoint(p.name for p in validation)
    assert [p.name for p in validation] == [name for name in NAMES[:300] if is_validation(name, 0.25)]
    # other music, other order, other neighbours: the same files are held out
    others = [piece(name, pitch=40) for name in reversed(NAMES[:300:2])]
    _, other_validation = split(others, 0.25)
    assert {p.name for p in other_validation} == {p.name for p in validation} & set(NAMES[:300:2])


# --------------------------------------------------------------------------------------------
# Transposition


def test_transpose_range_keeps_every_note_inside_the_keys():
    quarters = roll(2, (23, 0, 4), (100, 40, 50))  # rows 2 and 79
    assert transpose_range(quarters, 6) == (-2, 6)
    assert transpose_range(quarters, 12) == (-2, 8)
    assert transpose_range(quarters, 0) == (0, 0)
    assert transpose_range(roll(1, (21, 0, 1), (108, 0, 1)), 6) == (0, 0)
    assert transpose_range(roll(1), 6) == (0, 0)


def voice_piece(name: str, num_quarters: int, *voices: list[tuple[int, int, int]]) -> CorpusPiece:
    """A corpus piece of four voices, each given as notes (onset step, offset step, MIDI pitch)."""
    notes = tuple(np.array(voice, dtype=np.int64).reshape(-1, 3) for voice in voices)
    made = Voices(notes, num_quarters, STEPS_PER_QUARTER)
    return CorpusPiece(name, made.quarters(), sum(map(len, notes)), 0, voices=made)


def test_transpose_lines_moves_keys_and_leaves_rests():
    keys = torch.tensor([[[10, SILENCE, 12]], [[SILENCE, 40, 41]]])  # [2, 1, 3]
    assert transpose_lines(keys, torch.tensor([3, -5])).tolist() == [[[13, SILENCE, 15]], [[SILENCE, 35, 36]]]


def test_voice_quarter_dataset_transposes_only_within_range():
    low = [(0, 8, 21), (8, 32, 26)]  # keys 0 ... 5: may go up 6 semitones only
    high = [(32, 64, 100), (48, 49, 108)]  # keys 79 ... 87: may go down only
    pieces = [
        voice_piece("a.mid", 2, high[:1], high[1:], [], low),
        voice_piece("b.mid", 1, [(0, 4, 67)], [(4, 8, 64)], [], [(8, 12, 60)]),
    ]
    dataset = VoiceQuarterDataset(pieces, max_transpose=6)
    assert len(dataset) == 3
    keys = torch.from_numpy(np.concatenate([p.voices.lines()[0] for p in pieces]))  # [3, 4, 32]
    onsets = torch.from_numpy(np.concatenate([p.voices.lines()[1] for p in pieces]))
    expected_shifts = [set(range(0, 7)), set(range(-6, 1)), set(range(-6, 7))]

    generator = torch.Generator().manual_seed(0)
    seen: list[set[int]] = [set(), set(), set()]
    for _ in range(40):
        indices = torch.tensor([0, 1, 2, 2, 1, 0])
        moved_keys, moved_onsets = dataset.batch(indices, generator)
        assert moved_keys.shape == (6, 4, STEPS_PER_QUARTER) and moved_keys.dtype == torch.long
        assert torch.equal(moved_onsets, onsets[indices])  # onsets do not move
        for moved, index in zip(moved_keys, indices.tolist(), strict=True):
            original = keys[index]
            rests = original == SILENCE
            assert torch.equal(moved == SILENCE, rests)
            (shift,) = (moved - original)[~rests].unique().tolist()  # every note by the same semitones
            assert 0 <= int(moved[~rests].min()) and int(moved[~rests].max()) < NUM_KEYS
            seen[index].add(shift)
    assert seen == expected_shifts

    as_they_are = dataset.batch(torch.arange(3))  # no generator: as they are
    assert torch.equal(as_they_are[0], keys) and torch.equal(as_they_are[1], onsets)
    unshifted = VoiceQuarterDataset(pieces, max_transpose=0)
    assert torch.equal(unshifted.batch(torch.arange(3), torch.Generator().manual_seed(1))[0], keys)


def test_voice_quarter_dataset_gives_lines_read_over_the_whole_piece():
    held = voice_piece("a.mid", 2, [(16, 48, 60)], [], [], [])  # a Soprano note held across the boundary
    restruck = voice_piece("b.mid", 2, [], [(0, 32, 64), (32, 40, 64)], [], [])  # the Alto strikes it again
    dataset = VoiceQuarterDataset([held, restruck], max_transpose=3)
    keys, onsets = dataset.batch(torch.arange(4))
    assert (keys[0, 0, 16:] == 60 - LOWEST_PITCH).all() and (keys[1, 0, :16] == 60 - LOWEST_PITCH).all()
    assert onsets[0, 0].nonzero().flatten().tolist() == [16] and not onsets[1].any()  # held on: no onset
    assert onsets[2, 1].nonzero().flatten().tolist() == [0] and onsets[3, 1].nonzero().flatten().tolist() == [0]
    assert (keys[2, 1] == 64 - LOWEST_PITCH).all()  # the repeat sounds to its last step: no codec gap in a line
    assert onsets.sum() == 3 and (keys[:, 2:] == SILENCE).all()
    moved_keys, moved_onsets = dataset.batch(torch.arange(4), torch.Generator().manual_seed(0))
    assert torch.equal(moved_onsets, onsets)
    for moved, original in zip(moved_keys, keys, strict=True):
        sounding = original != SILENCE
        (shift,) = (moved - original)[sounding].unique().tolist()
        assert -3 <= shift <= 3 and (moved[~sounding] == SILENCE).all()


def test_a_piece_is_read_as_four_voices_from_its_parts_or_by_the_rule(tmp_path: Path):
    satb = make_midi(
        [Note(72, 0.0, 1.0, track=1), Note(67, 0.0, 1.0, track=2), Note(64, 0.0, 1.0, track=3)]
        + [Note(48, 0.0, 0.5, track=4), Note(48, 0.5, 0.5, track=4)]
    )
    folder = write(tmp_path / "midi", {"parts.mid": satb, "chords.mid": TWO_QUARTERS})
    split_by_rule: list[str] = []
    pieces = load_corpus(folder, on_split=split_by_rule.append)
    assert split_by_rule == ["chords.mid"]
    assert [(p.name, p.read_as) for p in pieces] == [("chords.mid", READ_BY_RULE), ("parts.mid", READ_FROM_PARTS)]
    parts = pieces[1].voices
    assert [notes.tolist() for notes in parts.notes] == [
        [[0, 32, 72]],
        [[0, 32, 67]],
        [[0, 32, 64]],
        [[0, 16, 48], [16, 32, 48]],  # the Bass's repeated note stays two notes
    ]
    for piece in pieces:
        assert piece.voices.num_voices == 4 and np.array_equal(piece.quarters, piece.voices.quarters())
    cached = load_corpus(folder, tmp_path / "cache", on_split=lambda name: None)
    again = load_corpus(folder, tmp_path / "cache", on_split=split_by_rule.append)
    assert split_by_rule == ["chords.mid"] * 2  # told from the cache too
    for first, second in zip(cached, again, strict=True):
        assert first.read_as == second.read_as
        assert all(np.array_equal(a, b) for a, b in zip(first.voices.notes, second.voices.notes, strict=True))


def test_normalizing_the_key_moves_the_voices_with_the_quarters(tmp_path: Path):
    d_major = make_midi(
        [
            Note(74, 0.0, 1.0, track=1),
            Note(66, 0.0, 1.0, track=2),
            Note(62, 0.0, 1.0, track=3),
            Note(50, 0.0, 1.0, 0, 4),
        ]
        + [Note(69, 1.0, 1.0, track=1), Note(66, 1.0, 1.0, track=2), Note(61, 1.0, 1.0, track=3)]
        + [Note(45, 1.0, 1.0, track=4)]
    )
    (as_written,) = load_corpus(write(tmp_path / "a", {"d.mid": d_major}))
    (moved,) = load_corpus(write(tmp_path / "b", {"d.mid": d_major}), normalize_key=True)
    assert as_written.key == "D major" and moved.shift == -2
    for before, after in zip(as_written.voices.notes, moved.voices.notes, strict=True):
        assert np.array_equal(after, before + np.array([0, 0, -2]))
    assert np.array_equal(moved.quarters, moved.voices.quarters())


# --------------------------------------------------------------------------------------------
# CodeWindowDataset


def encoded(name: str, num_quarters: int, lowest_shift: int, num_shifts: int) -> EncodedPiece:
    """Codes that tell where they came from: shift row * 10_000 + position."""
    positions = torch.arange(num_quarters * 16)
    rows = torch.arange(num_shifts)[:, None]
    return EncodedPiece(name, lowest_shift, rows * 10_000 + positions)


def test_code_windows_start_on_quarter_boundaries_and_skip_short_pieces():
    pieces = [encoded("long", 14, -2, 5), encoded("short", 11, 0, 3), encoded("exact", 12, -1, 2)]
    dataset = CodeWindowDataset(pieces, window=192, codes_per_quarter=16)
    assert dataset.skipped == 1
    assert len(dataset) == 3 + 1  # long: starts 0, 16, 32; exact: start 0

    inputs, targets = dataset.batch(torch.arange(len(dataset)))
    assert inputs.shape == targets.shape == (4, 191) and inputs.dtype == torch.long
    assert torch.equal(targets[:, :-1], inputs[:, 1:])
    positions, rows = inputs % 10_000, inputs // 10_000
    assert positions[:, 0].tolist() == [0, 16, 32, 0]
    assert torch.equal(positions, positions[:, :1] + torch.arange(191))
    assert targets[:, -1].remainder(10_000).tolist() == [191, 207, 223, 191]
    assert rows.tolist() == [[2] * 191] * 3 + [[1] * 191]  # without a generator: the untransposed row


def test_code_windows_with_a_generator_take_any_allowed_transposition():
    dataset = CodeWindowDataset([encoded("long", 13, -3, 7)], window=32, codes_per_quarter=16)
    assert len(dataset) == 12
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        inputs, targets = dataset.batch(torch.arange(len(dataset)), generator)
        rows = torch.cat([inputs, targets[:, -1:]], dim=1) // 10_000
        assert torch.equal(rows, rows[:, :1].expand_as(rows))  # one transposition per window
        seen.update(rows[:, 0].tolist())
        assert torch.equal(inputs[:, 0] % 10_000, torch.arange(0, 12 * 16, 16))
    assert seen == set(range(7))


# --------------------------------------------------------------------------------------------
# scan


@pytest.fixture
def scan_dir(tmp_path: Path) -> Path:
    return write(
        tmp_path / "midi",
        {
            "a.mid": TWO_QUARTERS,
            "bad.mid": b"\x00" * 64,
            "empty.mid": b"",
            "sub/b.mid": ONE_QUARTER,
            "notes.txt": b"",
        },
    )


def test_scan_prints_a_line_per_file_and_a_summary(scan_dir: Path, capsys):
    assert main(["scan", str(scan_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "a.mid: 2 quarters, 3 notes, C4-G4, C major, voices split by the voicing rule",
        "bad.mid: skipped: not a MIDI file (no MThd header)",
        "empty.mid: skipped: empty file",
        "sub/b.mid: 1 quarters, 2 notes, 1 dropped, A3-D4, D major, voices split by the voicing rule",
        "4 files, 2 read, 2 skipped",
    ]


def test_scan_json_gives_one_object_per_file(scan_dir: Path, capsys):
    assert main(["scan", str(scan_dir), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines[:-1]] == [
        {
            "file": "a.mid",
            "quarters": 2,
            "notes": 3,
            "dropped_notes": 0,
            "key": "C major",
            "voices": "voicing rule",
            "error": None,
        },
        {
            "file": "bad.mid",
            "quarters": None,
            "notes": None,
            "dropped_notes": None,
            "key": None,
            "voices": None,
            "error": "not a MIDI file (no MThd header)",
        },
        {
            "file": "empty.mid",
            "quarters": None,
            "notes": None,
            "dropped_notes": None,
            "key": None,
            "voices": None,
            "error": "empty file",
        },
        {
            "file": "sub/b.mid",
            "quarters": 1,
            "notes": 2,
            "dropped_notes": 1,
            "key": "D major",
            "voices": "voicing rule",
            "error": None,
        },
    ]
    assert lines[-1] == "4 files, 2 read, 2 skipped"


def test_scan_applies_the_length_limit(scan_dir: Path, capsys):
    assert main(["scan", str(scan_dir), "--max-quarters", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a.mid: skipped: 2 quarters long, over the limit of 1"
    assert lines[-1] == "4 files, 1 read, 3 skipped"


def test_scan_exits_1_when_no_file_is_read_and_2_without_a_folder(tmp_path: Path, capsys):
    folder = write(tmp_path / "midi", {"x.mid": b"RIFF", "y.mid": b""})
    assert main(["scan", str(folder)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "2 files, 0 read, 2 skipped"
    assert main(["scan", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
