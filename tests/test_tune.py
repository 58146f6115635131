"""The tune model and tune-first generation: tokens, fermatas, training, sampling, endings, model sets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch

from bachsformer.checkpoint import CheckpointError, load_checkpoint
from bachsformer.compose import load_models
from bachsformer.config import GenerateConfig
from bachsformer.gpt import GPT, GPTConfig
from bachsformer.harmonize import final_chord_end, harmonize, last_note
from bachsformer.midi import (
    LOWEST_PITCH,
    NUM_KEYS,
    STEPS_PER_QUARTER,
    quarters_to_midi_bytes,
    read_midi,
    read_midi_bytes,
    read_midi_tracks,
)
from bachsformer.tune import (
    DRAFT_SEED_STRIDE,
    END,
    ENDING_SLOTS,
    FERMATA,
    HOLD,
    LAST_NOTE_SLOTS,
    MAJOR,
    MINOR,
    NOTE,
    REST,
    SLOTS_PER_QUARTER,
    VOCAB_SIZE,
    TuneWindowDataset,
    add_markers,
    countdown_index,
    draw_last_notes,
    last_note_slots,
    load_tune_model,
    read_fermatas,
    sample_tunes,
    tail_log_likelihoods,
    tune_quarters,
    tune_tokens,
)
from bachsformer.tunefirst import compose_tune_first, load_tune_for
from bachsformer.voices import SILENCE

OPTIONS = GenerateConfig(min_note_steps=0, candidates=4)
TUNE_FIRST = ("--set", "generate.tune_first=true")  # as config.yaml has it (the tiny config writes the old way)


def line(notes: list[tuple[int, int, int]], num_quarters: int) -> np.ndarray:
    """One line of (MIDI pitch, onset step, length in steps) notes as quarters [Q, 88, 32]."""
    roll = np.zeros((NUM_KEYS, num_quarters * STEPS_PER_QUARTER), dtype=bool)
    for pitch, onset, length in notes:
        roll[pitch - LOWEST_PITCH, onset : onset + length] = True
    return np.ascontiguousarray(roll.reshape(NUM_KEYS, num_quarters, STEPS_PER_QUARTER).transpose(1, 0, 2))


# a tune with a quarter, two eighths, a repeated note, a half note with a fermata and a rest
TUNE_NOTES = [(67, 0, 32), (69, 32, 16), (71, 48, 15), (71, 64, 32), (72, 96, 64)]
FERMATA_STEP = 96


def test_tune_tokens_round_trip_on_the_eighth_grid():
    melody = line(TUNE_NOTES, 6)
    tokens = tune_tokens(melody, [FERMATA_STEP])
    expected = [NOTE + 67 - 21, HOLD, NOTE + 48, NOTE + 50, NOTE + 50, HOLD, NOTE + 51, FERMATA, HOLD, HOLD]
    assert tokens.tolist() == expected + [REST, REST]
    quarters, fermatas = tune_quarters(tokens)
    assert fermatas == [FERMATA_STEP]
    assert np.array_equal(quarters[:5], melody[:5])  # the trailing rest quarter is no note
    assert not quarters[5:].any()


def test_fermata_markers_round_trip_through_a_midi_file(tmp_path):
    # one silent quarter first: reading trims it, and the fermata moves with the music
    melody = np.concatenate([np.zeros((1, NUM_KEYS, STEPS_PER_QUARTER), bool), line(TUNE_NOTES, 6)])
    data = quarters_to_midi_bytes(melody)
    ticks = 480  # midi.py writes 480 ticks per quarter
    marked = add_markers(data, [ticks * (1 + FERMATA_STEP // STEPS_PER_QUARTER)])
    path = tmp_path / "marked.mid"
    path.write_bytes(marked)
    assert read_fermatas(path) == [FERMATA_STEP]
    assert np.array_equal(read_midi(path).quarters, read_midi_bytes(data).quarters)  # the notes read alike
    assert [t.name for t in read_midi_tracks(path)] == [t.name for t in read_midi_tracks_of(data, tmp_path)]
    assert FERMATA in tune_tokens(read_midi(path).quarters, read_fermatas(path)).tolist()
    unmarked = tmp_path / "plain.mid"
    unmarked.write_bytes(data)
    assert read_fermatas(unmarked) == []


def read_midi_tracks_of(data: bytes, folder):
    path = folder / "tracks.mid"
    path.write_bytes(data)
    return read_midi_tracks(path)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny config, its model pair and a tune model trained beside it."""
    root = tmp_path_factory.mktemp("tune")
    tiny.write_config(root)
    tiny.write_model_pair(root)
    tiny.write_tune_model(root)
    return root


def test_sampled_tunes_end_within_the_last_bar_and_repeat_with_their_seed(root):
    model = load_tune_model(root / "tune.pt")
    num_slots = 12 * SLOTS_PER_QUARTER
    tunes = sample_tunes(model, num_slots, [0, 1, 2], [MAJOR, MINOR, MAJOR], top_p=0.95)
    bar = 4 * SLOTS_PER_QUARTER
    for tune in tunes:
        assert num_slots - bar <= len(tune) <= num_slots
        assert END not in tune.tolist()
    alone = sample_tunes(model, num_slots, [1], [MINOR], top_p=0.95)[0]
    assert np.array_equal(alone, tunes[1])


def test_a_long_tune_slides_its_window(root):
    model = load_tune_model(root / "tune.pt")
    num_slots = 3 * (tiny.TUNE_BLOCK + 1)  # three windows
    tune = sample_tunes(model, num_slots, [5], [MAJOR])[0]
    assert num_slots - 4 * SLOTS_PER_QUARTER <= len(tune) <= num_slots


def test_harmonizing_a_tune_with_a_trailing_rest_ends_on_a_chord_held_to_the_beat(root):
    vq_vae, transformer = load_models(root / "vq_vae.pt", root / "transformer.pt")
    melody = line([(72, 0, 32), (74, 32, 32), (71, 64, 32), (72, 96, 48)], 6)  # then a rest of 1.5 quarters
    piece = harmonize(vq_vae, transformer, melody, OPTIONS, seed=3)
    last_onset, end, chord_end = 96, 144, 160  # the chord held to the beat after the last note
    assert piece.voices.notes[0].tolist() == [[0, 32, 72], [32, 64, 74], [64, 96, 71], [96, end, 72]]  # the tune
    keys, onsets = piece.voices.lines()
    lower = keys[:, 1:].transpose(1, 0, 2).reshape(3, -1)  # [3, T]
    struck = onsets[:, 1:].transpose(1, 0, 2).reshape(3, -1)
    assert (lower[:, chord_end:] == SILENCE).all()  # nothing sounds after the final chord
    assert (lower[:, chord_end - 1] != SILENCE).sum() >= 1  # harmony under the tune's last note, held on
    # held: nothing struck or released under the last note (the step after its onset on: a voice's note
    # sounding into the chord on its key goes on as a tie)
    under = lower[:, last_onset + 1 : chord_end]
    assert (under == under[:, :1]).all() and not struck[:, last_onset + 1 : chord_end].any()
    tune_keys = keys[:, 0].reshape(-1)
    assert ((lower[:, :end] == SILENCE) | (lower[:, :end] <= tune_keys[:end])).all()  # nothing above the tune
    held_on = lower[:, end:chord_end]
    assert ((held_on == SILENCE) | (held_on <= tune_keys[end - 1])).all()  # nor above its last note, held on
    roll = piece.quarters.transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # and the file's union of the voices
    assert not roll[:, chord_end:].any() and (highest_keys(roll[:, :end]) <= tune_keys[:end]).all()


def highest_keys(roll: np.ndarray) -> np.ndarray:
    return np.where(roll.any(axis=0), NUM_KEYS - 1 - np.argmax(roll[::-1], axis=0), -1)


def test_a_tune_model_goes_with_any_pair_and_is_refused_only_for_another_key_setting(tmp_path, monkeypatch, capsys):
    tiny.write_config(tmp_path)
    tiny.write_model_pair(tmp_path)
    tiny.write_tune_model(tmp_path, {"transformer_fingerprint": "0" * 16, "vq_vae_fingerprint": "1" * 16})
    assert load_tune_for(tmp_path / "tune.pt", normalize_key=True).config.vocab_size == 93  # beside another pair
    with pytest.raises(CheckpointError, match="data.normalize_key=false; give the setting"):
        load_tune_for(tmp_path / "tune.pt", normalize_key=False)
    config = str(tmp_path / "config.yaml")
    status, out, err = tiny.run_script(
        "generate.py", "--config", config, *TUNE_FIRST, "--quarters", "8", "--out", str(tmp_path / "out"),
        "--set", "data.normalize_key=false", monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "writes tunes in C major and A minor (data.normalize_key=true)" in err
    assert "python train_tune.py --out runs/my_tune and pass --set models.tune=runs/my_tune/best.pt" in err


def test_generate_writes_tune_first(root, monkeypatch, capsys):
    assert GenerateConfig().tune_first  # the default
    out = root / "out"
    args = ["--config", str(root / "config.yaml"), *TUNE_FIRST, "--out", str(out), "--quarters", "12", "--num", "2"]
    status, stdout, err = tiny.run_script("generate.py", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err
    paths = [line for line in stdout.splitlines() if line.endswith(".mid")]
    assert len(paths) == 2 and all("tune-" in p for p in paths)
    for path in paths:
        melody = read_midi_tracks(path)[0]
        last_onset, tune_end = last_note(melody.quarters)
        assert 12 - 4 <= tune_end / STEPS_PER_QUARTER <= 12  # within the last bar of the length asked for
        chord_end = final_chord_end(last_onset, tune_end, STEPS_PER_QUARTER)  # a short last note's chord held on
        assert read_midi(path).quarters.shape[0] == -(-chord_end // STEPS_PER_QUARTER)  # and nothing after it
    status, stdout, err = tiny.run_script(
        "generate.py", *args, "--no-tune", monkeypatch=monkeypatch, capsys=capsys
    )  # the old way, one option away
    assert status == 0 and "tune-" not in stdout


def test_tune_first_counts_every_quarter_asked_though_a_tune_closes_early(root, monkeypatch):
    vq_vae, transformer = load_models(root / "vq_vae.pt", root / "transformer.pt")
    tune_model = load_tune_for(root / "tune.pt", normalize_key=True)

    def closing_early(*args, **options):  # each tune two quarters short of the length asked
        return [tune[: -2 * SLOTS_PER_QUARTER] for tune in sample_tunes(*args, **options)]

    monkeypatch.setattr("bachsformer.tunefirst.sample_tunes", closing_early)
    calls = []
    options = dataclasses.replace(OPTIONS, quarters=12)
    compose_tune_first(vq_vae, transformer, tune_model, options, [0, 1], progress=calls.append)
    for _ in range(2):  # per piece: 1 for each quarter harmonized, then the quarters its tune left unwritten
        written = calls.index(next(quarters for quarters in calls if quarters > 1))
        assert calls[:written] == [1] * written and 0 < written <= 10 and calls[written] == 12 - written
        calls = calls[written + 1 :]
    assert calls == []


def test_a_piece_shorter_than_a_phrase_is_refused(root, monkeypatch, capsys):
    args = ["--config", str(root / "config.yaml"), *TUNE_FIRST, "--out", str(root / "short"), "--quarters", "4"]
    status, _, err = tiny.run_script("generate.py", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "a piece of 4 quarters is shorter than a tune's one phrase: ask for 8 or more" in err


def test_without_a_tune_model_generate_warns_and_writes_the_old_way(tmp_path, monkeypatch, capsys):
    tiny.write_config(tmp_path)
    tiny.write_model_pair(tmp_path)  # no tune.pt: an old pair alone
    args = ["--config", str(tmp_path / "config.yaml"), *TUNE_FIRST, "--out", str(tmp_path / "out"), "--quarters", "4"]
    status, stdout, err = tiny.run_script("generate.py", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0
    assert err.startswith("warning: ") and "no tune model" in err and len(err.strip().splitlines()) == 1
    assert read_midi(stdout.splitlines()[0]).quarters.shape[0] == 4


def test_a_pair_saved_before_the_end_condition_loads(tmp_path):
    tiny.write_config(tmp_path)
    _, transformer_path = tiny.write_model_pair(tmp_path)
    checkpoint = load_checkpoint(transformer_path, "transformer")
    del checkpoint["config"]["countdown"]  # as every checkpoint written before the tune model
    torch.save(checkpoint, transformer_path)
    _, transformer = load_models(tmp_path / "vq_vae.pt", transformer_path)
    assert transformer.config.countdown == 0 and not hasattr(transformer, "countdown_embedding")


def test_a_tiny_tune_model_trains_on_a_corpus_without_fermatas(tmp_path, monkeypatch, capsys):
    tiny.write_corpus(tmp_path / "midi")
    config = tiny.write_config(tmp_path)
    status, out, err = tiny.run_script("train_tune.py", "--config", str(config), monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err
    assert "note: no file of" in out and "fermata" in out
    model = load_tune_model(tmp_path / "runs" / "tune" / "best.pt")
    first = sample_tunes(model, 16, [7], [MAJOR])[0]
    assert np.array_equal(first, sample_tunes(model, 16, [7], [MAJOR])[0])
    assert load_checkpoint(tmp_path / "runs" / "tune" / "best.pt", "tune")["minor_share"] >= 0


def test_the_corpus_export_writes_a_scores_fermatas_as_markers(tmp_path):
    music21 = pytest.importorskip("music21")
    from bachsformer.corpus import export

    part = music21.stream.Part()
    for number, name in enumerate(["G4", "A4", "B4", "C5"]):
        note = music21.note.Note(name, quarterLength=2 if number == 1 else 1)
        if number == 1:  # the A is a phrase's last note, on quarter 1
            note.expressions.append(music21.expressions.Fermata())
        part.append(note)
    score = music21.stream.Score([part])
    source = tmp_path / "phrase.musicxml"
    score.write("musicxml", fp=str(source))
    export(source, tmp_path / "phrase.mid")
    assert read_fermatas(tmp_path / "phrase.mid") == [STEPS_PER_QUARTER]
    tokens = tune_tokens(read_midi(tmp_path / "phrase.mid").quarters, read_fermatas(tmp_path / "phrase.mid"))
    assert tokens.tolist()[2:6] == [NOTE + 69 - LOWEST_PITCH, FERMATA, HOLD, HOLD]


def test_training_windows_weigh_each_target_once_its_ending_as_much_as_its_middle():
    tunes = [np.full(40, NOTE + 40), np.full(6, NOTE + 41)]  # 40 + 2 tokens: windows of 16 from every quarter
    dataset = TuneWindowDataset(tunes, [MAJOR, MINOR], window=16)
    assert len(dataset) == 14 + 1  # starts 0, 2, ..., 26; the short tune is one padded window
    inputs, targets, remaining, modes, weight = dataset.batch(torch.arange(len(dataset)))
    assert targets[-1, 6].item() == END and targets[-1, 7].item() == -1 and weight[-1, 7] == 0
    assert torch.equal(remaining[0, :3], torch.tensor([40, 39, 38]))  # target 1 is 40 tokens before END
    # over all windows each target's weights add to one: END (in one window) weighs as a middle token (in seven)
    totals = torch.zeros(42)
    for row, (number, start) in enumerate(dataset.starts.tolist()):
        if number == 0:
            totals[start + 1 : start + 16] += weight[row]
    assert torch.allclose(totals[1:], torch.ones(41))
    assert weight[13, -1] == 1 and weight[6, 7] == pytest.approx(1 / 7)


def test_the_countdown_runs_to_the_last_note_and_its_windows_hear_it():
    c, d = NOTE + 51, NOTE + 53
    tune = np.array([c, HOLD, d, HOLD, c, FERMATA, HOLD, HOLD])  # the last note starts at token 4
    assert countdown_index(tune) == 9 and countdown_index(tune, to_last_note=True) == 5
    assert last_note_slots(tune) == 4 and countdown_index(np.array([REST, REST]), to_last_note=True) == 3
    _, targets, remaining, _, _ = TuneWindowDataset([tune], [MAJOR], window=16, to_last_note=True).batch(
        torch.tensor([0])
    )
    assert targets[0, :9].tolist() == [*tune.tolist(), END]
    assert remaining[0, :9].tolist() == [4, 3, 2, 1, 0, 0, 0, 0, 0]  # the last note itself hears 0, as what follows


def counting_model(block_size: int) -> GPT:
    """An untrained tiny tune model whose countdown runs to the last note (seeded: the same weights each time)."""
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=VOCAB_SIZE,
        block_size=block_size,
        n_layer=1,
        n_head=2,
        n_embd=16,
        codes_per_quarter=SLOTS_PER_QUARTER,
        countdown=8,
        countdown_to_last_note=True,
    )
    return GPT(config).eval()


def test_a_model_counting_to_the_last_note_starts_it_where_asked_and_holds_it_to_the_end():
    model = counting_model(block_size=15)
    num_slots, last_notes = 40, [2, 6, 4]
    tunes = sample_tunes(model, num_slots, [0, 1, 2], [MAJOR, MINOR, MAJOR], last_notes=last_notes)
    for tune, last in zip(tunes, last_notes):
        assert len(tune) == num_slots  # never cut short, never longer
        assert tune[-last] >= NOTE  # the last note starts there (its pitch the model's)
        held = tune[-last + 1 :].tolist()
        assert set(held) <= {HOLD, FERMATA} and FERMATA not in held[1:]  # held, a fermata only first
    assert np.array_equal(sample_tunes(model, num_slots, [1], [MINOR], last_notes=[6])[0], tunes[1])
    assert draw_last_notes(model, [0, 1]) == [LAST_NOTE_SLOTS] * 2  # an untrained model records no lengths
    model.checkpoint_info = {"last_note_slots": [0, 0, 0, 0, 0, 0, 5]}  # only dotted halves
    assert draw_last_notes(model, [0, 1]) == [6, 6]


def test_a_close_drawn_several_ways_keeps_the_beginning_and_the_most_likely_close():
    model = counting_model(block_size=31)
    num_slots, last_notes, modes = 40, [4, 6], [MAJOR, MINOR]
    plain = sample_tunes(model, num_slots, [3, 4], modes, last_notes=last_notes)
    drafted = sample_tunes(model, num_slots, [3, 4], modes, last_notes=last_notes, ending_drafts=6)
    changed = 0
    for seed, tune, chosen, last, mode in zip([3, 4], plain, drafted, last_notes, modes):
        first = num_slots - last - ENDING_SLOTS
        assert len(chosen) == num_slots and np.array_equal(chosen[:first], tune[:first])  # the beginning kept
        assert chosen[-last] >= NOTE and set(chosen[-last + 1 :].tolist()) <= {HOLD, FERMATA}
        # the six ways drawn again by hand, the tune as sampled first: the chosen one is the likeliest
        seeds = [seed * DRAFT_SEED_STRIDE + k for k in range(1, 6)]
        others = sample_tunes(model, num_slots, seeds, [mode] * 5, prefix=tune[:first], last_notes=[last] * 5)
        ways = np.stack([tune, *others])
        assert np.array_equal(chosen, ways[np.argmax(tail_log_likelihoods(model, ways, mode, first))])
        changed += not np.array_equal(tune, chosen)
    assert changed  # six ways of an untrained model's close: another one won somewhere
    alone = sample_tunes(model, num_slots, [4], [MINOR], last_notes=[6], ending_drafts=6)[0]
    assert np.array_equal(alone, drafted[1])  # the same alone or in a batch
    primer = plain[0][:30]  # a primer reaching into the close is never drawn again
    continued = sample_tunes(model, num_slots, [5], [MAJOR], prefix=primer, last_notes=[4], ending_drafts=6)[0]
    assert np.array_equal(continued[:30], primer)


def test_the_folk_tunes_shipped_are_the_ones_the_export_writes(tmp_path):
    pytest.importorskip("music21")
    from bachsformer.corpus import export_folk_tunes

    paths = export_folk_tunes(tmp_path, count=2)
    assert [path.name for path in paths] == ["kinder0-01.mid", "kinder0-02.mid"]
    shipped = Path(__file__).parent.parent / "data" / "tunes" / "folk"
    assert all(path.read_bytes() == (shipped / path.name).read_bytes() for path in paths)
    assert read_midi(paths[0]).quarters.any(axis=(1, 2)).sum() >= 8  # a tune of bars, not a stub
