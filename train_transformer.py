"""Train the Bachsformer transformer on the corpus, encoded as codes by a trained VQ-VAE.

    python train_transformer.py                              # VQ-VAE from models/vq_vae.pt
    python train_transformer.py --set models.vq_vae=runs/vq_vae/best.pt --out runs/gpt
    python train_transformer.py --out runs/gpt --resume      # continue where it stopped
    torchrun --nproc_per_node=2 train_transformer.py         # DistributedDataParallel

Every piece, key-normalized (data.normalize_key), is encoded once at each transposition
augmentation may use (cached under data.cache_dir, keyed by the VQ-VAE's fingerprint and the
corpus content), then windows of block_size + 1
codes that start on quarter boundaries are drawn at random transpositions. Each epoch reports
held-out bits per code beside two baselines on the same codes, a unigram and a bigram model;
`best` is kept by held-out bits. The checkpoint records the fingerprint of its VQ-VAE.
"""

import argparse

import torch

from bachsformer.checkpoint import export_run
from bachsformer.codes import (
    baselines,
    bits_per_code,
    encode_pieces,
    evaluation_melodies,
    evaluation_modes,
    evaluation_windows,
    first_code_distribution,
)
from bachsformer.config import ConfigError, load_config
from bachsformer.data import CodeWindowDataset, load_corpus
from bachsformer.errors import ArgumentParser, exit_on_user_error
from bachsformer.gpt import GPT
from bachsformer.melody import soprano_tokens
from bachsformer.training import Trainer, check_run_folder, setup_distributed, training_split
from bachsformer.tune import piece_mode
from bachsformer.vqvae import VQVAE


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    parser.add_argument("--out", help="run folder (default: train_transformer.out from the config)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument(
        "--write-models", action="store_true", help="copy the best model to models.transformer (models/)"
    )
    args = parser.parse_args()

    config = load_config(args.config, args.set)
    train_config = config.train_transformer
    if args.out:
        train_config.out = args.out
    run_dir = check_run_folder(train_config.out, args.resume)
    ranks, device = setup_distributed(train_config.device)
    torch.manual_seed(train_config.seed)

    vq_vae = VQVAE.from_checkpoint(config.models.vq_vae, map_location=device)
    if config.gpt.vocab_size != vq_vae.num_embeddings:
        raise ConfigError(
            f"gpt.vocab_size is {config.gpt.vocab_size}, but the VQ-VAE {config.models.vq_vae}"
            f" has {vq_vae.num_embeddings} codes; set them equal"
        )
    if config.gpt.codes_per_quarter != vq_vae.codes_per_quarter:
        raise ConfigError(
            f"gpt.codes_per_quarter is {config.gpt.codes_per_quarter}, but the VQ-VAE writes"
            f" {vq_vae.codes_per_quarter} codes per quarter; set them equal"
        )
    pieces = load_corpus(
        config.data.midi_dir, config.data.cache_dir, config.data.max_quarters, normalize_key=config.data.normalize_key
    )
    train_pieces, validation_pieces = training_split(pieces, config.data)
    cache_dir = config.data.cache_dir
    train_codes = encode_pieces(vq_vae, train_pieces, train_config.max_transpose, cache_dir)
    validation_codes = encode_pieces(vq_vae, validation_pieces or train_pieces, 0, cache_dir)
    window = config.gpt.block_size + 1
    # the melody each piece's codes hear: its own Soprano (gpt.melody_quarters 0: none), and with
    # gpt.hears_mode the mode of the key it closes in (data.load_corpus reads it)
    heard_ahead, per_quarter = config.gpt.melody_quarters, vq_vae.codes_per_quarter
    train_melodies = [soprano_tokens(p.voices) for p in train_pieces] if heard_ahead else None
    train_modes = [piece_mode(p.key) for p in train_pieces] if config.gpt.hears_mode else None
    train_set = CodeWindowDataset(
        train_codes, window, per_quarter, train_melodies, heard_ahead, config.gpt.melody_dropout, train_modes
    )
    held_out = evaluation_windows(validation_codes, window)
    held_out_melodies = held_out_modes = None
    if heard_ahead:
        melodies = [soprano_tokens(p.voices) for p in validation_pieces or train_pieces]
        held_out_melodies = evaluation_melodies(validation_codes, melodies, window, per_quarter, heard_ahead)
    if config.gpt.hears_mode:
        modes = [piece_mode(p.key) for p in validation_pieces or train_pieces]
        held_out_modes = evaluation_modes(validation_codes, modes, window)
    baseline_bits = baselines(train_codes, held_out, vq_vae.num_embeddings)
    if ranks.is_main:
        print(
            f"{len(pieces)} files: {len(train_pieces)} train ({len(train_set)} windows of {window} codes,"
            f" {train_set.skipped} pieces shorter), {len(validation_pieces)} held out; device {device}"
        )
        unigram, bigram = baseline_bits["unigram_bits"], baseline_bits["bigram_bits"]
        print(f"held-out baselines: unigram {unigram:.3f}, bigram {bigram:.3f} bits per code")

    model = GPT(config.gpt).to(device)
    model.first_code_probs.copy_(first_code_distribution(train_codes, vq_vae.codes_per_quarter, config.gpt.vocab_size))
    optimizer = model.configure_optimizer(train_config.learning_rate, train_config.weight_decay)

    def compute_loss(model, batch):
        # melody [B, window quarters + heard ahead - 1, slots] and mode [B], if the model hears them
        inputs, targets, melody, mode = (*batch, None, None)[:4]
        _, loss = model(inputs, targets, melody=melody, mode=mode)
        return loss, {}

    def evaluate(model):
        scores = {"bits_per_code": bits_per_code(model, held_out, melodies=held_out_melodies, modes=held_out_modes)}
        if held_out_melodies is not None:  # the same codes heard without their melody
            scores["bits_per_code_without_melody"] = bits_per_code(model, held_out)
        return {**scores, **baseline_bits}

    trainer = Trainer(
        model,
        "transformer",
        config,
        train_config,
        train_set,
        compute_loss,
        evaluate=evaluate,
        best_metric="bits_per_code",
        maximize=False,
        run_dir=run_dir,
        optimizer=optimizer,
        ranks=ranks,
        device=device,
        checkpoint_extra=lambda: {"vq_vae_fingerprint": vq_vae.fingerprint},
    )
    if args.resume:
        trainer.resume()
    trainer.fit()

    if args.write_models and ranks.is_main:
        shipped = export_run(run_dir, "transformer", config.models.transformer)
        print(f"wrote {shipped} (the best model of {run_dir})")


if __name__ == "__main__":
    exit_on_user_error(main)
