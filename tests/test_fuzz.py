"""Damaged MIDI files (benchmarks.fuzz) either read or raise MidiError, quickly and in bounded memory."""

import itertools
import random
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bachsformer.data import scan
from bachsformer.midi import NUM_KEYS, STEPS_PER_QUARTER, MidiError, quarters_to_midi_bytes, read_midi_bytes
from benchmarks import fuzz

MAX_QUARTERS = 2_000  # small, so that files holding every key up to the limit stay cheap
TIME_LIMIT = 2.0  # seconds per file
FILES_PER_FAMILY = 30
CORPUS = Path(__file__).resolve().parents[1] / "data" / "midi"

SEEDS = fuzz.roll_seeds(np.random.default_rng(0)) + fuzz.corpus_seeds(CORPUS, 2, random.Random(0))
FILES = list(itertools.islice(fuzz.damaged_files(SEEDS, 0, MAX_QUARTERS), FILES_PER_FAMILY * len(fuzz.FAULT_FAMILIES)))


def file_name(number: int) -> str:
    return f"{fuzz.damaged_name(number, FILES[number][0])}.mid"


def read_timed(data: bytes, name: str, max_quarters: int = MAX_QUARTERS):
    """read_midi_bytes, asserting it took under TIME_LIMIT whether it read or raised."""
    start = time.perf_counter()
    try:
        return read_midi_bytes(data, name, max_quarters=max_quarters)
    finally:
        assert time.perf_counter() - start < TIME_LIMIT, f"{name} took over {TIME_LIMIT} s"


def held_keys(num_quarters: int) -> bytes:
    """All 88 keys struck at once and released together after `num_quarters` quarters."""
    body = b"\x00\x90" + b"\x00".join(bytes((21 + key, 64)) for key in range(NUM_KEYS))
    body += fuzz.vlq(num_quarters * 480) + b"\x80" + b"\x00".join(bytes((21 + key, 0)) for key in range(NUM_KEYS))
    return fuzz.smf([body + fuzz.END_OF_TRACK])


@pytest.mark.parametrize("number", range(len(FILES)), ids=file_name)
def test_damaged_file_reads_or_raises_midi_error(number):
    name = file_name(number)
    try:
        piece = read_timed(FILES[number][1], name)
    except MidiError as error:
        assert str(error).startswith(f"{name}: ") and error.reason
        assert "\n" not in str(error)
    else:
        quarters = piece.quarters
        assert quarters.dtype == bool and quarters.shape[1:] == (NUM_KEYS, STEPS_PER_QUARTER)
        assert 1 <= len(quarters) <= MAX_QUARTERS and quarters.any()


def test_every_fault_family_is_tried_and_tempo_never_matters():
    assert Counter(kind for kind, _ in FILES) == dict.fromkeys(fuzz.FAULT_FAMILIES, FILES_PER_FAMILY)
    for kind, data in FILES:
        if kind == "tempos":  # steps come from ticks alone: absurd tempos change nothing
            read_midi_bytes(data, kind, max_quarters=MAX_QUARTERS)


def test_damaged_files_are_the_same_for_the_same_seed():
    again = list(itertools.islice(fuzz.damaged_files(SEEDS, 0, MAX_QUARTERS), len(FILES)))
    assert again == FILES
    assert list(itertools.islice(fuzz.damaged_files(SEEDS, 1, MAX_QUARTERS), len(FILES))) != FILES


def test_length_limit_is_applied_and_named_in_the_error():
    roll = np.zeros((10, NUM_KEYS, STEPS_PER_QUARTER), dtype=bool)
    roll[0, 39, :4] = roll[-1, 39, -4:] = True
    data = quarters_to_midi_bytes(roll)  # 10 quarters at 480 ticks per beat ...
    data = data[:12] + (1).to_bytes(2, "big") + data[14:]  # ... now 1 tick per beat: 4800 quarters
    with pytest.raises(MidiError, match=r"^long\.mid: 4800 quarters long, over the limit of 1000$"):
        read_timed(data, "long.mid", max_quarters=1000)
    assert read_timed(data, "long.mid", max_quarters=4800).quarters.shape == (4800, NUM_KEYS, STEPS_PER_QUARTER)


def test_file_claiming_millions_of_ticks_is_refused_before_allocating():
    body = b"\x00\x90\x3c\x40" + fuzz.MAX_DELTA + b"\x80\x3c\x00" + fuzz.END_OF_TRACK  # one note 2^28 beats long
    data = fuzz.smf([body], division=1)
    tracemalloc.start()
    try:
        with pytest.raises(MidiError, match=r"268435455 quarters long, over the limit of 20000$"):
            read_timed(data, "millions.mid", max_quarters=20_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


@pytest.mark.parametrize("num_quarters", [MAX_QUARTERS, MAX_QUARTERS + 1])
def test_every_key_held_to_the_limit_stays_in_bounded_memory(num_quarters):
    tracemalloc.start()
    try:
        try:
            quarters = read_timed(held_keys(num_quarters), "held.mid").quarters
        except MidiError as error:
            assert num_quarters > MAX_QUARTERS and f"over the limit of {MAX_QUARTERS}" in str(error)
        else:
            assert quarters.shape == (num_quarters, NUM_KEYS, STEPS_PER_QUARTER) and quarters.all()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < fuzz.memory_bound(MAX_QUARTERS)


def test_many_overlapping_notes_of_one_key_read_in_linear_time():
    count = 300_000  # 1.8 MB; pairing note-offs from the front of a list took seconds here
    body = b"\x00\x90\x3c\x40" + b"\x00\x3c\x40" * (count - 1) + b"\x01\x3c\x00" + b"\x00\x3c\x00" * (count - 1)
    body += fuzz.END_OF_TRACK
    piece = read_timed(fuzz.smf([body]), "stuck.mid")
    assert piece.notes == count and piece.quarters.shape == (1, NUM_KEYS, STEPS_PER_QUARTER)


def test_scan_reports_every_damaged_file(tmp_path, capsys):
    files = FILES[: 4 * len(fuzz.FAULT_FAMILIES)]
    paths = fuzz.write_files(tmp_path, files)
    readable = 0
    for path in paths:
        try:
            read_midi_bytes(path.read_bytes(), path.name, max_quarters=MAX_QUARTERS)
            readable += 1
        except MidiError:
            pass

    read = scan(tmp_path, max_quarters=MAX_QUARTERS)
    lines = capsys.readouterr().out.splitlines()
    assert read == readable
    assert len(lines) == len(files) + 1
    assert lines[-1] == f"{len(files)} files, {readable} read, {len(files) - readable} skipped"
    assert [line.split(": ")[0] for line in lines[:-1]] == [path.name for path in paths]
    assert sum(": skipped: " in line for line in lines[:-1]) == len(files) - readable


def test_python_m_benchmarks_fuzz_prints_the_table_from_the_repository_root():
    files = len(fuzz.FAULT_FAMILIES)
    command = [sys.executable, "-m", "benchmarks.fuzz", "--files", str(files), "--corpus", str(CORPUS)]
    result = subprocess.run(command, cwd=CORPUS.parents[1], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{files} faults injected." in result.stdout
    assert sum(line.startswith("|") for line in result.stdout.splitlines()) == 2 + files + 1  # head, rows, total
