"""Training and coding throughput of the config's two models on this machine.

    python -m benchmarks.training [--steps 20] [--threads N] [--device cpu]

Prints VQ-VAE training quarters/s, encode and decode quarters/s, and transformer training tokens/s,
each on random data of the shapes training uses (speed does not depend on the values).
"""

import argparse
import time

import torch

from bachsformer.config import load_config
from bachsformer.gpt import GPT
from bachsformer.midi import NUM_KEYS, STEPS_PER_QUARTER
from bachsformer.vqvae import VQVAE


def rate(work, items: int, steps: int) -> float:
    """Items per second of `work()`, after two warm-up calls."""
    for _ in range(2):
        work()
    start = time.perf_counter()
    for _ in range(steps):
        work()
    return items * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config("config.yaml")
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} CPU thread(s)")

    vq_vae = VQVAE(config.vq_vae).to(device)
    batch = config.train_vq_vae.batch_size
    voices = config.vq_vae.voices

    def lines(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random lines of `count` quarters: keys [count, V, 32] (some rests) and onsets."""
        keys = torch.randint(NUM_KEYS + 1, (count, voices, STEPS_PER_QUARTER), device=device)
        return keys, torch.rand(count, voices, STEPS_PER_QUARTER, device=device) < 0.2

    keys, onsets = lines(batch)
    before = lines(batch) if config.vq_vae.decoder_context else ()
    optimizer = torch.optim.Adam(vq_vae.parameters(), lr=1e-4)

    def vq_step():
        loss = vq_vae(keys, onsets, *before).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    print(f"VQ-VAE train:  {rate(vq_step, batch, args.steps):9.0f} quarters/s (batch {batch})")
    vq_vae.eval()
    many = lines(1024)
    codes = vq_vae.encode(*many)
    print(f"VQ-VAE encode: {rate(lambda: vq_vae.encode(*many), 1024, args.steps):9.0f} quarters/s")
    print(f"VQ-VAE decode: {rate(lambda: vq_vae.decode(codes), 1024, args.steps):9.0f} quarters/s")

    gpt = GPT(config.gpt).to(device)
    batch = config.train_transformer.batch_size
    tokens = torch.randint(config.gpt.vocab_size, (batch, config.gpt.block_size + 1), device=device)
    optimizer = gpt.configure_optimizer(1e-4, 0.1)

    def gpt_step():
        _, loss = gpt(tokens[:, :-1], tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    tokens_per_step = batch * config.gpt.block_size
    tokens_per_second = rate(gpt_step, tokens_per_step, args.steps)
    print(f"GPT train:     {tokens_per_second:9.0f} tokens/s (batch {batch} x {config.gpt.block_size})")


if __name__ == "__main__":
    main()
