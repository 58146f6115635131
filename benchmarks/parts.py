"""Where the time of a run goes: the tune model, the transformer, the VQ-VAE, the four-part rules, the files.

`time_parts(run)` calls run() with the models' entry points wrapped by stopwatches and returns the
wall-clock seconds of each part (or what another clock counts, such as floating-point operations),
the rest of the run under "other" (reading the melody, imposing it, choosing, Python around the
models). A part's time is counted once where parts nest: the transformer called by the tune model
counts to the tune model. The wrappers cost microseconds per call, so the total stays what an
unwrapped run takes.
"""

from __future__ import annotations

import contextlib
import time

from bachsformer import compose, harmonize, midi, tunefirst
from bachsformer.gpt import GPT
from bachsformer.vqvae import VQVAE

# part -> the (owner, attribute) entry points whose calls it is: methods, or module functions where they are called
PARTS = {
    "tune model": [(tunefirst, "sample_tunes")],
    "transformer": [
        (GPT, "shared_context"),
        (GPT, "sample_after"),
        (GPT, "log_likelihood_after"),
        (GPT, "log_likelihood"),
        (GPT, "generate"),
    ],
    "VQ-VAE": [(VQVAE, "encode"), (VQVAE, "decode")],
    "rules": [(harmonize, "rule_penalties"), (harmonize, "cadence_scores")],
    "MIDI in and out": [(compose, "piece_midi_bytes"), (midi, "write_bytes"), (harmonize, "read_melody")],
}


@contextlib.contextmanager
def stopwatches(seconds: dict[str, float], clock=time.perf_counter):
    """Wrap every entry point of PARTS so that its calls add what clock() counts during them to seconds[part]."""
    active = []  # the part whose call is running, outermost first
    originals = []

    def wrapped(part, function):
        def timed(*args, **kwargs):
            if active:  # inside another part's call: counted there
                return function(*args, **kwargs)
            active.append(part)
            started = clock()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[part] = seconds.get(part, 0.0) + clock() - started
                active.pop()

        return timed

    for part, entry_points in PARTS.items():
        for owner, name in entry_points:
            function = getattr(owner, name)
            originals.append((owner, name, function))
            setattr(owner, name, wrapped(part, function))
    try:
        yield seconds
    finally:
        for owner, name, function in reversed(originals):
            setattr(owner, name, function)


def time_parts(run, clock=time.perf_counter) -> dict[str, float]:
    """Seconds (or what clock() counts) per part (PARTS, then "other" and "total") of one call of run()."""
    seconds = {part: 0.0 for part in PARTS}
    with stopwatches(seconds, clock):
        started = clock()
        run()
        total = clock() - started
    seconds["other"] = total - sum(seconds.values())
    seconds["total"] = total
    return seconds


def print_parts(title: str, seconds: dict[str, float]) -> None:
    """A table of seconds per part and their shares of the total."""
    print(f"{title}: {seconds['total']:.2f} s")
    for part, value in seconds.items():
        if part != "total":
            print(f"  {part:20} {value:6.2f} s  {value / seconds['total']:5.1%}")
