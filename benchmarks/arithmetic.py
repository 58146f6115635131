"""The arithmetic of harmonizing, and how fast this CPU does it: where the time cannot be batched away.

    python -m benchmarks.arithmetic [--quarters 32] [--threads 1]

1. The benchmark melody (benchmarks.guided's) harmonized once timed and once with its floating-point
   operations counted (torch.utils.flop_counter, which counts the matrix products, convolutions and
   attention), per part (benchmarks/parts.py): seconds, GFLOP, and the rate reached, GFLOP/s.
2. Each model call of one harmonized quarter (its context: 11 quarters, the melody heard, guidance as
   the config) timed at 16 candidates, one piece's, and at 64 and 256, what batching 4 and 16 pieces
   (`generate.py --num`) would hand it: the milliseconds per candidate.
3. A matrix product of the transformer's own shape, the rate this CPU reaches on it.
Uses the model pair in models/ and the config's generation defaults.
"""

import argparse
import dataclasses
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bachsformer.compose import load_models
from bachsformer.config import load_config
from bachsformer.harmonize import harmonize
from bachsformer.melody import melody_tokens, window_melody
from bachsformer.sampling import set_sampling_threads
from benchmarks.guided import benchmark_chorale
from benchmarks.parts import time_parts

CONTEXT_QUARTERS = 11  # a full window: 176 codes of context before the quarter drawn


def milliseconds(call, repeats: int = 5) -> float:
    """Mean wall-clock milliseconds of call() after one warm-up call."""
    call()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quarters", type=int, default=32, help="melody length")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (generate.py chooses 1)")
    args = parser.parse_args()
    threads = set_sampling_threads(args.threads)
    config = load_config("config.yaml")
    vq_vae, transformer = load_models(config.models.vq_vae, config.models.transformer, "cpu")
    options = dataclasses.replace(config.generate, key="")
    path, soprano, _ = benchmark_chorale(config.data.midi_dir, max(args.quarters, CONTEXT_QUARTERS + 1))
    melody = soprano[: args.quarters]
    print(f"{path.name}: melody of {args.quarters} quarters; {options.candidates} candidates; {threads} thread(s)")

    def run():
        harmonize(vq_vae, transformer, melody, options, seed=0)

    run()  # warm-up
    seconds = time_parts(run)
    with FlopCounterMode(display=False) as counter:
        flops = time_parts(run, clock=counter.get_total_flops)
    print(f"\nharmonize {args.quarters} quarters: {'seconds':>8} {'GFLOP':>8} {'GFLOP/s':>8}")
    for part in ("transformer", "VQ-VAE", "total"):
        rate = flops[part] / 1e9 / seconds[part] if seconds[part] else 0.0
        print(f"  {part:28} {seconds[part]:8.2f} {flops[part] / 1e9:8.2f} {rate:8.1f}")
    per_quarter = flops["total"] / 1e9 / args.quarters, seconds["total"] / args.quarters * 1000
    print("  per quarter: {:.3f} GFLOP, {:.1f} ms".format(*per_quarter))

    # one quarter's model calls, after a full window, at the batch sizes that --num would give them
    tokens = torch.from_numpy(melody_tokens(soprano))
    heard = window_melody(tokens, 0, CONTEXT_QUARTERS + transformer.config.melody_quarters)
    generator = torch.Generator().manual_seed(0)
    context = transformer.generate(None, CONTEXT_QUARTERS * vq_vae.codes_per_quarter, [0])[0]
    with torch.inference_mode():
        shared = transformer.shared_context(context, heard, options.guidance, mode=0)  # any mode: the same work
        drawn = transformer.sample_after(shared, 256, vq_vae.codes_per_quarter, generator, 1.0, 0, 1.0)  # [256, 16]
        keys, onsets = vq_vae.decode(drawn, consecutive=False)
        previous = context[-vq_vae.codes_per_quarter :]
        calls = {
            "transformer: sample a quarter": lambda m: transformer.sample_after(
                shared, m, vq_vae.codes_per_quarter, generator, 1.0, 0, 1.0
            ),
            "VQ-VAE: decode": lambda m: vq_vae.decode(drawn[:m], consecutive=False, previous=previous),
            "VQ-VAE: encode": lambda m: vq_vae.encode(keys[:m], onsets[:m]),
            "transformer: log-likelihood": lambda m: transformer.log_likelihood_after(shared, drawn[:m]),
        }
        sizes = (16, 64, 256)
        print(f"\nms per candidate at {' / '.join(map(str, sizes))} candidates in one call (1 / 4 / 16 pieces)")
        for name, call in calls.items():
            per_candidate = [milliseconds(lambda m=m, call=call: call(m)) / m for m in sizes]
            print(f"  {name:32} " + " / ".join(f"{value:5.2f}" for value in per_candidate))
        context_ms = milliseconds(lambda: transformer.shared_context(context, heard, options.guidance, mode=0))
        print(f"  the context, run once per quarter  {context_ms:5.2f} ms")

    width = transformer.config.n_embd
    print(f"\nthis CPU on the transformer's matrix products ([rows, {width}] x [{width}, {4 * width}]):")
    weight = torch.randn(4 * width, width)
    for rows in (32, 512):
        inputs = torch.randn(rows, width)
        ms = milliseconds(lambda inputs=inputs: torch.nn.functional.linear(inputs, weight), repeats=200)
        print(f"  {rows:4} rows: {2 * rows * width * 4 * width / ms / 1e6:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
