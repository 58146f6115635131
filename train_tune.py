"""Train the tune model: the transformer of bachsformer/gpt.py over the top lines of the corpus.

    python train_tune.py                                   # runs/tune
    python train_tune.py --out runs/tune2 --set tune.n_layer=4
    python train_tune.py --out runs/tune --resume          # continue where it stopped
    python train_tune.py --write-models                    # and copy the best model to models/tune.pt

Every piece's top line, key-normalized (data.normalize_key), becomes eighth-note tokens with its
phrase ends (fermata markers, written by `python -m bachsformer.corpus`; a corpus without them
trains, and says so), on the split the other stages use. Training windows hold `tune.block_size`
+ 1 tokens from each quarter boundary; every token hears how far the tune's end is and its mode.
Each epoch reports held-out bits per token beside a unigram and a bigram model; `best` is kept by
held-out bits. A tune model reads no codes: it goes with any model pair trained with the same
`data.normalize_key` (tunes in C major and A minor, or in their own keys), which is all
generate.py checks.
"""

import argparse

import torch

from bachsformer.checkpoint import export_run
from bachsformer.config import ConfigError, load_config
from bachsformer.data import load_corpus
from bachsformer.errors import ArgumentParser, exit_on_user_error
from bachsformer.gpt import GPT
from bachsformer.training import Trainer, check_run_folder, setup_distributed, training_split
from bachsformer.tune import (
    KIND,
    SLOTS_PER_QUARTER,
    VOCAB_SIZE,
    TuneWindowDataset,
    bits_per_token,
    corpus_tunes,
    last_note_slots,
    tune_baselines,
    tune_loss,
)


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    parser.add_argument("--out", help="run folder (default: train_tune.out from the config)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--write-models", action="store_true", help="copy the best model to models.tune (models/)")
    args = parser.parse_args()

    config = load_config(args.config, args.set)
    train_config, model_config = config.train_tune, config.tune
    if args.out:
        train_config.out = args.out
    checks = [
        (model_config.vocab_size == VOCAB_SIZE, f"tune.vocab_size: must be {VOCAB_SIZE}, the tune tokens"),
        (model_config.codes_per_quarter == SLOTS_PER_QUARTER, f"tune.codes_per_quarter: must be {SLOTS_PER_QUARTER}"),
        (model_config.countdown > 0, "tune.countdown: must be above 0: the tune model hears where its tune ends"),
        (model_config.melody_quarters == 0, "tune.melody_quarters: must be 0: a tune hears no melody"),
        (
            train_config.max_transpose == 0,
            "train_tune.max_transpose: must be 0: the tunes are learned in C major and A minor, as the mode names them",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    run_dir = check_run_folder(train_config.out, args.resume)
    ranks, device = setup_distributed(train_config.device)
    torch.manual_seed(train_config.seed)

    pieces = load_corpus(
        config.data.midi_dir, config.data.cache_dir, config.data.max_quarters, normalize_key=config.data.normalize_key
    )
    train_pieces, validation_pieces = training_split(pieces, config.data)
    train_tunes, train_modes, marked = corpus_tunes(train_pieces, config.data.midi_dir)
    held_out_tunes, held_out_modes, _ = corpus_tunes(validation_pieces or train_pieces, config.data.midi_dir)
    train_set = TuneWindowDataset(
        train_tunes, train_modes, model_config.block_size + 1, model_config.countdown_to_last_note
    )
    baseline_bits = tune_baselines(train_tunes, held_out_tunes)
    # what sampling needs beside the weights: how often free tunes are minor
    recorded = {"minor_share": sum(train_modes) / len(train_modes)}
    # and how long their last notes are (counts by eighths; a note shorter than a quarter left out)
    lengths = [last_note_slots(t) for t in train_tunes]
    recorded["last_note_slots"] = [
        sum(n == slots for n in lengths) if slots >= SLOTS_PER_QUARTER else 0 for slots in range(max(lengths) + 1)
    ]
    if ranks.is_main:
        print(
            f"{len(pieces)} files: {len(train_pieces)} train ({len(train_set)} windows of"
            f" {model_config.block_size + 1} tokens), {len(validation_pieces)} held out; device {device}"
        )
        if not marked:
            print(
                f"note: no file of {config.data.midi_dir} marks its phrase ends (fermata markers); the tunes"
                " learn phrases from their notes alone"
            )
        else:
            print(f"{marked} of {len(train_pieces)} training files mark their phrase ends (fermatas)")
        unigram, bigram = baseline_bits["unigram_bits"], baseline_bits["bigram_bits"]
        print(f"held-out baselines: unigram {unigram:.3f}, bigram {bigram:.3f} bits per token")

    model = GPT(model_config).to(device)
    optimizer = model.configure_optimizer(train_config.learning_rate, train_config.weight_decay)

    def compute_loss(model, batch):
        return tune_loss(model, batch), {}

    def evaluate(model):
        return {"bits_per_token": bits_per_token(model, held_out_tunes, held_out_modes), **baseline_bits}

    trainer = Trainer(
        model,
        KIND,
        config,
        train_config,
        train_set,
        compute_loss,
        evaluate=evaluate,
        best_metric="bits_per_token",
        maximize=False,
        run_dir=run_dir,
        optimizer=optimizer,
        ranks=ranks,
        device=device,
        checkpoint_extra=lambda: dict(recorded),
    )
    if args.resume:
        trainer.resume()
    trainer.fit()

    if args.write_models and ranks.is_main:
        shipped = export_run(run_dir, KIND, config.models.tune)
        print(f"wrote {shipped} (the best model of {run_dir})")


if __name__ == "__main__":
    exit_on_user_error(main)
