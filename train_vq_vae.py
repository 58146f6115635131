"""Train the Ludovico VQ-VAE on a folder of MIDI files.

    python train_vq_vae.py                                  # config.yaml, run in runs/vq_vae
    python train_vq_vae.py --out runs/big --set vq_vae.hidden_channels=128
    python train_vq_vae.py --out runs/big --resume          # continue where it stopped
    torchrun --nproc_per_node=2 train_vq_vae.py             # DistributedDataParallel

The corpus is read as four voices (from each file's parts, or split by the voicing rule) and
key-normalized (data.normalize_key); each quarter enters as its voices' lines, transposed at random
when train_vq_vae.max_transpose is above 0. Held-out files (chosen by a hash of their name, the same
split the transformer uses) give each voice's agreement, onset F1, held notes and codebook perplexity
each epoch. The run folder holds config.yaml, metrics.jsonl, last.pt and best.pt (best by the voices'
agreement). Nothing is written into models/ unless --write-models is given.
"""

import argparse

import torch

from bachsformer.checkpoint import export_run
from bachsformer.config import load_config
from bachsformer.data import VoiceQuarterDataset, load_corpus
from bachsformer.errors import ArgumentParser, exit_on_user_error
from bachsformer.training import Trainer, check_run_folder, setup_distributed, training_split
from bachsformer.vqvae import VQVAE, reconstruction_scores


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    parser.add_argument("--out", help="run folder (default: train_vq_vae.out from the config)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--write-models", action="store_true", help="copy the best model to models.vq_vae (models/)")
    args = parser.parse_args()

    config = load_config(args.config, args.set)
    train_config = config.train_vq_vae
    if args.out:
        train_config.out = args.out
    run_dir = check_run_folder(train_config.out, args.resume)
    ranks, device = setup_distributed(train_config.device)
    torch.manual_seed(train_config.seed)

    pieces = load_corpus(
        config.data.midi_dir, config.data.cache_dir, config.data.max_quarters, normalize_key=config.data.normalize_key
    )
    train_pieces, validation_pieces = training_split(pieces, config.data)
    train_set = VoiceQuarterDataset(train_pieces, train_config.max_transpose, config.vq_vae.decoder_context)
    if ranks.is_main:
        print(
            f"{len(pieces)} files: {len(train_pieces)} train ({len(train_set)} quarters),"
            f" {len(validation_pieces)} held out; device {device}"
        )

    model = VQVAE(config.vq_vae).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.learning_rate)
    # Too few held-out files (a tiny corpus) fall back to judging on the training files.
    judged = [p.voices.lines() for p in (validation_pieces or train_pieces)]

    def compute_loss(model, batch):
        output = model(*batch)  # lines (keys, onsets), and those of the quarters before with decoder_context
        return output.loss, {"ppl": output.perplexity}

    trainer = Trainer(
        model,
        "vq_vae",
        config,
        train_config,
        train_set,
        compute_loss,
        evaluate=lambda model: reconstruction_scores(model, judged),
        best_metric="voice_agreement",
        maximize=True,
        run_dir=run_dir,
        optimizer=optimizer,
        ranks=ranks,
        device=device,
    )
    if args.resume:
        trainer.resume()
    trainer.fit()

    if args.write_models and ranks.is_main:
        shipped = export_run(run_dir, "vq_vae", config.models.vq_vae)
        print(f"wrote {shipped} (the best model of {run_dir})")


if __name__ == "__main__":
    exit_on_user_error(main)
