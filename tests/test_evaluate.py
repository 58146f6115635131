"""python -m bachsformer.evaluate end to end, on tiny untrained models and a tiny corpus of mixed lengths.

What is tested is the bookkeeping: which pieces are generated at which length, what the table and
the JSON hold, and that a bad option is one line. The metrics themselves are tested in test_metrics.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import tiny
import torch
from midi_files import roll

from bachsformer.config import load_config
from bachsformer.data import CorpusPiece, load_corpus, split
from bachsformer.endings import CADENCES
from bachsformer.errors import exit_on_user_error
from bachsformer.evaluate import codes_kept_under_transposition, evaluate, main, targets, tune_close
from bachsformer.midi import write_midi
from bachsformer.tune import FERMATA, HOLD, MAJOR, MINOR, NOTE
from bachsformer.voices import Voices
from bachsformer.vqvae import voice_channels

FILE_QUARTERS = (6, 7, 8, 9, 10, 11, 12, 13, 14, 15)  # one length per file: the held-out lengths tell them apart


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    tiny.write_config(root)
    tiny.write_model_pair(root)
    (root / "midi").mkdir()
    for number, quarters in enumerate(FILE_QUARTERS):
        write_midi(tiny.tiny_rolls(1, quarters, seed=number)[0], root / "midi" / f"piece{number:02d}.mid")
    return root


@pytest.fixture(scope="module")
def config(root):
    return load_config(root / "config.yaml")


def held_out_lengths(config) -> list[int]:
    pieces = load_corpus(config.data.midi_dir, config.data.cache_dir)
    _, held_out = split(pieces, config.data.validation_fraction)
    return [len(piece.quarters) for piece in held_out]


def test_pieces_take_the_held_out_lengths_in_turn(config):
    lengths = held_out_lengths(config)
    assert len(set(lengths)) >= 2  # the test needs held-out files of different lengths
    num_pieces = len(lengths) + 1  # one more piece than held-out files: the lengths cycle
    results = evaluate(config, num_pieces, None, seed=0, device="cpu")
    sampling = results["music"]["sampling"]
    assert sampling["quarters"] == "held-out lengths"
    assert sampling["lengths"] == lengths + lengths[:1]
    assert results["music"]["num_generated"] == num_pieces
    assert results["data"]["held_out"] == len(lengths)
    # the diagnostic samples every third quarter with a full window (2 quarters) before it and 4 after
    next_quarter = results["transformer"]["next_quarter"]
    assert next_quarter["context_quarters"] == tiny.BLOCK_QUARTERS - 1
    harmony = results["harmony"]  # both sets' harmony, read by bachsformer.analyze
    assert harmony["generated"]["pieces"] + harmony["generated"]["skipped"] == num_pieces
    assert harmony["Bach"]["pieces"] + harmony["Bach"]["skipped"] == len(lengths)
    assert next_quarter["quarters"] == sum(len(range(2, length - 4 + 1, 3)) for length in lengths)
    assert 0 <= next_quarter["sampled_in_key"] <= 1 and 0 <= next_quarter["reconstructed_in_key"] <= 1
    json.dumps(results)  # JSON-ready as it is
    # the decoder's four voices: four keys at most at once
    grid = results["music"]["grid"]
    assert set(grid) == {"note_value", "generated", "Bach"} and grid["generated"]["notes"] > 0
    assert grid["generated"]["max_keys"] <= 4 and results["targets"]["at_most_four_keys_at_once"]
    # the four-part figures of the generated pieces, the held-out files through the VQ-VAE, and the files
    four_part = results["four_part"]
    assert set(four_part) == {"generated", "reconstruction", "bach"}
    assert four_part["generated"]["quarters"] == sum(sampling["lengths"])
    assert four_part["reconstruction"]["quarters"] == four_part["bach"]["quarters"] == sum(lengths)
    assert set(four_part["bach"]["leaps"]) == {"Soprano", "Alto", "Tenor", "Bass"}
    vq_vae = results["vq_vae"]
    assert all(0 <= vq_vae[f"voice_{n}_sixteenths"] <= 1 for n in range(4)) and 0 <= vq_vae["voice_agreement"] <= 1


def test_a_fixed_length_gives_every_piece_that_length(config):
    results = evaluate(config, 3, 5, seed=0, device="cpu")
    assert results["music"]["sampling"]["lengths"] == [5, 5, 5]
    assert set(results["targets"]) == {
        "no_note_off_the_grid_or_shorter_than_it",
        "at_most_four_keys_at_once",
        "max_polyphony_within_10%",
        "polyphony_within_10%",
        "vq_vae_each_voice_matches_bach_on_0.95_of_sixteenths",
        "reconstruction_parallels_at_most_0.45_per_100_quarters",
        "reconstruction_inner_rests_at_most_0.005",
        "parallels_at_most_0.7_per_100_quarters",
        "inner_rests_at_most_0.01",
        "alto_leap_within_15%",
        "tenor_leap_within_15%",
        "notes_per_quarter_at_least_90%_of_bach",
        "vq_vae_held_notes_kept_held_at_least_0.90",
        "vq_vae_restruck_notes_kept_restruck_at_least_0.95",
        "vq_vae_onset_f1_at_least_0.95",
        "vq_vae_all_codes_used",
        "reconstruction_long_notes_within_20%",
        "reconstruction_repetition_within_30%",
        "reconstruction_max_polyphony_within_10%",
        "scale_consistency_within_0.02",
        "mean_overlapping_area_of_first_nine_at_least_0.7",
        "next_quarter_in_key_at_least_0.93",
        "max_polyphony_within_20%",
        "top_voice_leap_within_20%",
        "notes_per_quarter_within_10%",
        "no_verbatim_run_of_8_quarters",
        "silent_quarters_within_held_out_range",
        "repetition_within_held_out_range",
        "top_line_leap_within_10%",
        "top_line_range_within_10%",
        "final_chord_held_a_half_note_in_every_piece",
        "bass_on_the_tonic_at_the_end_at_least_0.70",
        "authentic_close_at_least_0.60",
        "tune_ends_on_the_tonic_at_least_0.65",
        "final_chord_held_a_quarter_or_more_at_least_0.9",
        "key_heard_as_written_at_least_0.90",
        "no_tune_cut_and_every_piece_within_a_bar_of_its_length",
    }
    lines = results["top_line_and_endings"]
    assert set(lines) == {"generated", "bach", "reconstruction"}
    assert 0 <= lines["generated"]["bass_on_tonic"] <= 1 and lines["bach"]["leap"] > 0
    endings = results["endings"]
    assert set(endings) == {"generated", "bach"}
    assert endings["generated"]["quarters"] == [5, 5, 5] and endings["generated"]["within_a_bar_of_the_length"] == 1
    assert endings["bach"]["pieces"] == len(held_out_lengths(config))
    assert sum(endings["generated"][f"final_{name}"] for name in CADENCES) == pytest.approx(1)


def test_targets_compare_with_bach_as_the_thresholds_say():
    bach = {
        "scale_consistency": 0.93,
        "max_polyphony": 4.0,
        "top_voice_leap": 2.0,
        "notes_per_quarter": 4.0,
        "long_notes": 0.1,
        "repetition": 0.05,
        "polyphony": 4.3,
    }
    ours = {
        "scale_consistency": 0.911,
        "max_polyphony": 4.8,
        "top_voice_leap": 2.41,
        "notes_per_quarter": 3.6,
        "polyphony": 3.9,
    }
    reconstruction = {"long_notes": 0.081, "repetition": 0.066, "max_polyphony": 4.5}
    results = {
        "vq_vae": {
            "held_kept": 0.9,
            "restruck_kept": 0.949,
            "onset_f1": 0.95,
            "voice_0_sixteenths": 0.99,
            "voice_1_sixteenths": 0.97,
            "voice_2_sixteenths": 0.95,
            "voice_3_sixteenths": 0.96,
            "codes_used": 64,
            "num_embeddings": 64,
        },
        "transformer": {"next_quarter": {"sampled_in_key": 0.93}},
        "music": {
            "generated_mean": {**ours, "silent_quarters": 0.0, "repetition": 0.2},
            "reference_mean": bach,
            "reconstruction_mean": reconstruction,
            "reference_range": {"silent_quarters": [0.0, 0.1], "repetition": [0.0, 0.1]},
            "mean_overlapping_area": 0.5,
            "mean_overlapping_area_of_first_nine": 0.75,
            "longest_verbatim_run": {"max": 7},
            "sampling": {"quarters": "held-out lengths"},
            "grid": {"generated": {"off_grid": 0.0, "shorter_than_grid": 0.01, "max_keys": 4}},
        },
        "four_part": {
            "bach": {
                "parallels": 0.2,
                "inner_rests": 0.0,
                "notes_per_quarter": 4.0,
                "leaps": {"Alto": 2.0, "Tenor": 2.0},
            },
            "generated": {
                "parallels": 0.7,
                "inner_rests": 0.011,
                "notes_per_quarter": 3.7,
                "leaps": {"Alto": 2.29, "Tenor": 2.31},
            },
            "reconstruction": {"parallels": 0.45, "inner_rests": 0.006},
        },
        "top_line_and_endings": {
            "bach": {"leap": 2.0, "range": 12.0},
            "generated": {"leap": 2.21, "range": 13.2, "final_chord_held_half": 31 / 32, "bass_on_tonic": 0.7},
        },
        "endings": {
            "generated": {
                "final_authentic": 0.6,
                "tune_on_tonic": 0.64,
                "final_chord_held": 0.9,
                "key_heard_as_written": 0.9,
                "tune_cut": 0.0,
                "within_a_bar_of_the_length": 31 / 32,
            }
        },
    }
    assert targets(results) == {
        "no_note_off_the_grid_or_shorter_than_it": False,  # 1 % shorter
        "at_most_four_keys_at_once": True,
        "max_polyphony_within_10%": False,  # 20 % above
        "polyphony_within_10%": True,  # 9.3 % below
        "vq_vae_each_voice_matches_bach_on_0.95_of_sixteenths": True,  # the Tenor's 0.95 the least
        "reconstruction_parallels_at_most_0.45_per_100_quarters": True,
        "reconstruction_inner_rests_at_most_0.005": False,
        "parallels_at_most_0.7_per_100_quarters": True,
        "inner_rests_at_most_0.01": False,
        "alto_leap_within_15%": True,  # 14.5 % above
        "tenor_leap_within_15%": False,  # 15.5 % above
        "notes_per_quarter_at_least_90%_of_bach": True,  # 92.5 %
        "vq_vae_held_notes_kept_held_at_least_0.90": True,
        "vq_vae_restruck_notes_kept_restruck_at_least_0.95": False,
        "vq_vae_onset_f1_at_least_0.95": True,
        "vq_vae_all_codes_used": True,
        "reconstruction_long_notes_within_20%": True,  # 19 % below
        "reconstruction_repetition_within_30%": False,  # 32 % above
        "reconstruction_max_polyphony_within_10%": False,  # 12.5 % above
        "scale_consistency_within_0.02": True,  # 0.019 off
        "mean_overlapping_area_of_first_nine_at_least_0.75": True,
        "next_quarter_in_key_at_least_0.93": True,
        "max_polyphony_within_20%": True,  # 4.8 is 20 % above 4
        "top_voice_leap_within_20%": False,  # 2.41 is 20.5 % above 2
        "notes_per_quarter_within_10%": True,
        "no_verbatim_run_of_8_quarters": True,
        "silent_quarters_within_held_out_range": True,
        "repetition_within_held_out_range": False,
        "top_line_leap_within_10%": False,  # 2.21 is 10.5 % above 2
        "top_line_range_within_10%": True,  # 13.2 is 10 % above 12
        "final_chord_held_a_half_note_in_every_piece": False,  # one piece of 32 not
        "bass_on_the_tonic_at_the_end_at_least_0.70": True,
        "authentic_close_at_least_0.60": True,
        "tune_ends_on_the_tonic_at_least_0.65": False,
        "final_chord_held_a_quarter_or_more_at_least_0.9": True,
        "key_heard_as_written_at_least_0.90": True,
        "no_tune_cut_and_every_piece_within_a_bar_of_its_length": False,  # one piece of 32 not within a bar
    }


class RowCounter:
    """An encoder that is exactly equivariant to shifts of 8 semitones: code (r, c) counts the cells of keys
    8r ... 8r + 7 in half c of the quarter where a voice sounds, modulo 16."""

    @staticmethod
    def encode(keys: torch.Tensor, onsets: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        sounding = voice_channels(keys, onsets)[:, : keys.shape[1]].sum(dim=1)  # [N, 88, 32]
        cells = sounding[:, :64].reshape(len(keys), 8, 8, 2, 16)  # [N, row, key in row, half, step]
        return (cells.sum(dim=(2, 4)).long() % 16).flatten(1)  # [N, 16], row-major over 8 x 2


def test_codes_kept_under_transposition_compares_codes_a_row_apart_per_8_semitones():
    rng = np.random.default_rng(0)
    parts = []
    for low, high in tiny.VOICE_RANGES[::-1]:  # voices between MIDI 36 and 76, notes of 4-8 steps every 8
        starts = np.arange(0, 4 * 32, 8)  # four quarters of notes; the fifth is silent
        lengths, pitches = rng.integers(4, 9, len(starts)), rng.integers(low, high + 1, len(starts))
        parts.append(np.stack([starts, starts + lengths, pitches], axis=1))
    voices = Voices(tuple(parts), 5, 32)
    piece = CorpusPiece("p.mid", voices.quarters(), 0, 0, voices=voices)
    # the silent quarter is left out, as it would trivially keep all its codes
    kept = codes_kept_under_transposition(RowCounter(), [piece], shifts=(0, 1, 8, 16))
    assert kept["0"] == kept["8"] == kept["16"] == 1.0  # 8 semitones: every code moves up a row, unchanged
    assert kept["1"] < 1.0


def run_evaluate(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["python -m bachsformer.evaluate", *args])
    capsys.readouterr()
    status = 0
    try:
        exit_on_user_error(main)  # what the module does when run
    except SystemExit as exit_info:
        status = exit_info.code or 0
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_prints_the_table_and_writes_the_json(root, config, monkeypatch, capsys, tmp_path):
    out, png = tmp_path / "results.json", tmp_path / "features.png"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    status, stdout, err = run_evaluate(
        monkeypatch, capsys, "--config", str(root / "config.yaml"), "--num", "2", "--json", str(out), "--png", str(png)
    )
    assert status == 0, err
    lengths = held_out_lengths(config)
    assert f"2 pieces of {min(lengths[:2])}-{max(lengths[:2])} (held-out lengths) quarters" in stdout
    assert "| **mean overlapping area** |" in stdout and "targets:" in stdout
    assert "| max_polyphony |" in stdout and "| top_voice_leap |" in stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in stdout
    assert torch.get_num_threads() == 1  # chosen on purpose (`set_sampling_threads`), whatever torch's default
    written = json.loads(out.read_text())
    assert written["music"]["sampling"]["lengths"] == lengths[:2]
    areas = written["music"]["overlapping_area"]
    assert np.isclose(written["music"]["mean_overlapping_area"], np.mean(list(areas.values())))


@pytest.mark.parametrize("option", [("--num", "0"), ("--quarters", "0"), ("--quarters", "many")])
def test_bad_options_are_one_line(root, monkeypatch, capsys, option):
    status, stdout, err = run_evaluate(monkeypatch, capsys, "--config", str(root / "config.yaml"), *option)
    assert status == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_a_tune_closes_on_the_tonic_by_step_and_is_cut_when_its_last_note_is_short():
    c, d, b, a = (NOTE + pitch - 21 for pitch in (72, 74, 71, 69))
    closed = np.array([d, HOLD, b, FERMATA, d, HOLD, c, FERMATA, HOLD, HOLD])
    assert tune_close(closed, MAJOR) == {
        "ends_on_tonic": True,
        "ends_by_step": True,
        "cut": False,
        "fermata_phrase_quarters": 2.5,  # 5 quarters, 2 fermatas
        "key_heard": False,  # D, B, D, C, mostly D: not heard in C major
    }
    cut = np.array([c, HOLD, HOLD, HOLD, b, HOLD, a, c])  # a leap of a third to an eighth note
    assert tune_close(cut, MAJOR) == {
        "ends_on_tonic": True,
        "ends_by_step": False,
        "cut": True,
        "fermata_phrase_quarters": 4.0,  # no fermata: its length
        "key_heard": True,  # C, B, A, C: C major
    }
    assert not tune_close(closed, MINOR)["ends_on_tonic"]  # A minor's tonic is A


def test_melodies_harmonizes_each_tune_in_a_folder_and_names_the_file_it_skips(root, monkeypatch, capsys, tmp_path):
    folder, out = tmp_path / "tunes", tmp_path / "endings.json"
    folder.mkdir()
    write_midi(roll(8, (67, 0, 64), (69, 64, 128), (71, 128, 192), (67, 192, 256)), folder / "a_tune.mid")
    write_midi(roll(4, (72, 0, 32), (74, 32, 64), (71, 64, 96), (72, 96, 128)), folder / "b_tune.mid")
    (folder / "c_broken.mid").write_bytes(b"MThd not a MIDI file")
    config = ("--config", str(root / "config.yaml"))
    status, stdout, err = run_evaluate(monkeypatch, capsys, *config, "--melodies", str(folder), "--json", str(out))
    assert status == 0, err
    assert "| a_tune.mid | " in stdout and "| b_tune.mid | " in stdout and "| final authentic |" in stdout
    assert "skipped " in stdout and "c_broken.mid" in stdout
    written = json.loads(out.read_text())
    assert [row["file"] for row in written["files"]] == ["a_tune.mid", "b_tune.mid"]
    assert [row["tune_key"] for row in written["files"]] == ["G major", "C major"]  # the keys they close in
    assert written["endings"]["pieces"] == 2 and sum(written["endings"][f"final_{c}"] for c in CADENCES) == 1
    assert len(written["skipped"]) == 1
