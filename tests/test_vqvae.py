import dataclasses

import numpy as np
import pytest
import torch

from bachsformer.checkpoint import export_run, save_checkpoint
from bachsformer.midi import quarters_to_notes
from bachsformer.vqvae import (
    VQVAE,
    VQVAEConfig,
    boundary_ties,
    quarter_channels,
    reconstruction_scores,
    split_at_onsets,
    transposed_convolution,
)

TINY = VQVAEConfig(num_embeddings=8, embedding_dim=8, hidden_channels=8, residual_layers=1, residual_channels=8)


def random_rolls(n: int, seed: int = 0) -> torch.Tensor:
    """Sparse rolls [n, 88, 32]: a few held notes each, like the music the model sees."""
    generator = torch.Generator().manual_seed(seed)
    rolls = torch.zeros(n, 88, 32)
    for i in range(n):
        for _ in range(3):
            key = int(torch.randint(30, 60, (1,), generator=generator))
            start = int(torch.randint(0, 16, (1,), generator=generator))
            rolls[i, key, start : start + 16] = 1
    return rolls


def test_encode_decode_shapes():
    model = VQVAE(TINY).eval()
    codes = model.encode(random_rolls(5))
    assert codes.shape == (5, 16) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < TINY.num_embeddings
    probabilities = model.decode(codes)
    assert probabilities.shape == (5, 88, 32)
    assert probabilities.min() >= 0 and probabilities.max() <= 1


def test_decode_of_encode_matches_the_forward_pass():
    model = VQVAE(TINY).eval()
    rolls = random_rolls(4)
    output = model(model.channels(rolls))
    assert output.logits.shape == (4, 2, 88, 32)
    assert torch.equal(model.encode(rolls), output.codes)
    assert torch.allclose(model.decode_channels(output.codes), torch.sigmoid(output.logits), atol=1e-6)
    probabilities = torch.sigmoid(output.logits)
    expected = split_at_onsets(probabilities[:, 0], probabilities[:, 1])
    assert torch.allclose(model.decode(output.codes), expected, atol=1e-6)


def test_inference_layouts_compute_what_the_layers_do():
    torch.manual_seed(3)
    model = VQVAE(dataclasses.replace(TINY, decoder_context=True)).eval()
    inputs = model.channels(random_rolls(4))
    assert torch.allclose(model.encode_latents(inputs), model.encoder(inputs), atol=1e-5)
    vectors = torch.randn(4, 2 * TINY.embedding_dim, 8, 2)
    assert torch.allclose(model.decode_logits(vectors), model.decoder(vectors), atol=1e-5)
    layer = torch.nn.ConvTranspose2d(5, 3, (3, 4), stride=(1, 2), padding=(0, 1))  # the decoder's shapes, and others
    x = torch.randn(2, 5, 8, 2)
    assert torch.allclose(transposed_convolution(x, layer), layer(x), atol=1e-5)
    with pytest.raises(ValueError, match="plain layers"):
        transposed_convolution(x, torch.nn.ConvTranspose2d(5, 3, 4, stride=2, output_padding=1))


def test_quarters_encoded_after_a_quarter_have_the_codes_they_have_after_it_in_a_piece():
    model = VQVAE(TINY).eval()
    rolls = random_rolls(5)
    rolls[1:, 40, :4] = 1  # notes that go on from the quarter before (a held note, no onset) ...
    rolls[0, 40, -4:] = 1
    rolls[2, 45, 0] = 1  # ... and one struck again after the codec's gap
    rolls[0, 45, -2] = 1
    after = model.encode(rolls[1:], consecutive=False, previous=rolls[0])
    in_pieces = [model.encode(torch.stack([rolls[0], quarter]))[1] for quarter in rolls[1:]]
    assert torch.equal(after, torch.stack(in_pieces))
    channels_after = quarter_channels(rolls[1:], consecutive=False, previous=rolls[0])
    pairs = [quarter_channels(torch.stack([rolls[0], quarter]))[1] for quarter in rolls[1:]]
    assert torch.equal(channels_after, torch.stack(pairs))  # what the encoder reads, exactly
    assert not torch.equal(
        channels_after, quarter_channels(rolls[1:], consecutive=False)
    )  # which the quarter before changes


def test_the_one_channel_model_reads_and_writes_the_roll():
    model = VQVAE(dataclasses.replace(TINY, onset_channel=False)).eval()
    rolls = random_rolls(3)
    output = model(model.channels(rolls))
    assert model.channels(rolls).shape == (3, 1, 88, 32) and output.logits.shape == (3, 1, 88, 32)
    assert torch.allclose(model.decode(output.codes), torch.sigmoid(output.logits[:, 0]), atol=1e-6)


def notes_of(quarters: torch.Tensor) -> list[tuple[int, int, int]]:
    return [tuple(note) for note in quarters_to_notes(quarters.numpy()).tolist()]


def test_a_repeat_across_a_quarter_boundary_stays_two_notes_and_a_held_note_one():
    quarters = torch.zeros(2, 88, 32, dtype=torch.bool)
    quarters[0, 40, 8:31] = True  # the codec's repeat: the first note lost its last step (31) ...
    quarters[1, 40, 0:16] = True  # ... because the same key starts again at the next quarter's step 0
    quarters[0, 50, 16:32] = True  # held across the boundary: one note
    quarters[1, 50, 0:8] = True
    channels = quarter_channels(quarters)  # [2, 2, 88, 32]
    sounding, onsets = channels[:, 0], channels[:, 1]
    assert sounding[0, 40, 31] and sounding[0, 40, 8:].all()  # the one-step gap is filled
    assert onsets[1, 40, 0] and not onsets[1, 50, 0]  # a new note starts; the held one goes on
    assert onsets.sum() == 3  # 40 at 8 and at 32, 50 at 16
    back = split_at_onsets(sounding.float(), onsets.float()) > 0.5
    assert torch.equal(back, quarters)
    assert notes_of(back) == [(8, 31, 61), (16, 40, 71), (32, 48, 61)]
    alone = quarter_channels(quarters, consecutive=False)  # each quarter read on its own
    assert alone[1, 1, 50, 0] and not alone[0, 0, 40, 31]


def test_decode_of_consecutive_quarters_is_the_codec_roll_when_the_channels_are_reproduced():
    class Exact(VQVAE):
        """Decodes to the true channels of a fixed piece, as a VQ-VAE that reproduces it would."""

    pieces = [random_rolls(6, seed).bool() for seed in range(3)]
    for piece in pieces:
        piece[2, 45, 28:32] = True  # repeated notes across and inside a quarter
        piece[2, 45, 27] = False
        piece[3, 45, 0:4] = True
        piece[3, 45, 4] = False
        piece[3, 45, 5:9] = True
        model = Exact(TINY).eval()
        model.decode_channels = lambda codes, previous=None, piece=piece: quarter_channels(piece).float()
        codes = torch.zeros(len(piece), 16, dtype=torch.long)
        assert torch.equal(model.decode(codes) > 0.5, piece)


def test_a_one_channel_checkpoint_written_before_onsets_still_loads(tmp_path):
    model = VQVAE(dataclasses.replace(TINY, onset_channel=False)).eval()
    save_checkpoint(tmp_path / "old.pt", "vq_vae", model.config, model)
    stored = torch.load(tmp_path / "old.pt", weights_only=True)
    del stored["config"]["onset_channel"], stored["config"]["onset_weight"]  # as the first checkpoints were
    torch.save(stored, tmp_path / "old.pt")
    loaded = VQVAE.from_checkpoint(tmp_path / "old.pt")
    assert loaded.config.onset_channel is False and loaded.input_channels == 1
    rolls = random_rolls(2)
    assert torch.equal(loaded.encode(rolls), model.encode(rolls))


def test_bad_shapes_and_codes_are_refused():
    model = VQVAE(TINY).eval()
    with pytest.raises(ValueError, match="rolls must be"):
        model.encode(torch.zeros(2, 87, 32))
    with pytest.raises(ValueError, match="codes must lie"):
        model.decode(torch.full((1, 16), TINY.num_embeddings))


def test_training_lowers_the_loss_and_moves_the_codebook():
    torch.manual_seed(0)
    model = VQVAE(TINY)
    rolls = model.channels(random_rolls(32))
    codebook_before = model.quantizer.embedding.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model(rolls).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(model.quantizer.embedding, codebook_before)


def test_eval_mode_leaves_the_codebook_alone():
    model = VQVAE(TINY).eval()
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    model(model.channels(random_rolls(4)))
    assert all(torch.equal(buffer, before[name]) for name, buffer in model.named_buffers())


def test_dead_codes_are_restarted_from_encoder_outputs():
    model = VQVAE(TINY)
    quantizer = model.quantizer
    quantizer.cluster_size.zero_()  # every code counts as unused
    vectors = torch.randn(64, TINY.embedding_dim) + 100.0  # far from the initial codebook
    latents = vectors.view(4, 4, 4, TINY.embedding_dim).permute(0, 3, 1, 2)
    quantizer(latents)
    # every restarted code now sits near one of the encoder outputs
    distances = (quantizer.embedding[:, None] - vectors[None]).norm(dim=-1).min(1).values
    assert (distances < 0.1).all()


def test_checkpoint_round_trip_keeps_weights_and_codebook(tmp_path):
    torch.manual_seed(1)
    model = VQVAE(TINY)
    model(model.channels(random_rolls(8)))  # a training-mode pass moves the EMA buffers off their init
    model.eval()
    save_checkpoint(tmp_path / "vq.pt", "vq_vae", model.config, model)
    loaded = VQVAE.from_checkpoint(tmp_path / "vq.pt")
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    rolls = random_rolls(3, seed=5)
    assert torch.equal(model.encode(rolls), loaded.encode(rolls))
    assert torch.equal(model.decode(model.encode(rolls)), loaded.decode(loaded.encode(rolls)))


def test_reconstruction_scores_are_exact_on_known_input():
    class Echo(VQVAE):
        """Encodes nothing; decodes a fixed roll, so the scores are known."""

    model = Echo(TINY).eval()
    target = np.zeros((2, 88, 32), dtype=bool)
    target[0, 40, 0:8] = True  # one note of 8 steps
    target[0, 40, 9:16] = True  # a repeated note after a one-step gap
    target[0, 50, 16:], target[1, 50, :16] = True, True  # a note held across the boundary
    target[0, 60, 16:31], target[1, 60, :16] = True, True  # a note struck again on the boundary
    prediction = target.copy()
    prediction[0, 40, 8] = True  # gap filled: the two notes merge, one onset lost
    prediction[0, 50, 31] = False  # the held note struck again
    model.decode = lambda codes, batch_size: torch.from_numpy(prediction).float()
    scores = reconstruction_scores(model, [target])
    frames_true, frames_predicted = 15 + 32 + 31, 16 + 31 + 31
    assert scores["frame_f1"] == pytest.approx(2 * (15 + 31 + 31) / (frames_true + frames_predicted))
    assert scores["onset_f1"] == pytest.approx(2 * 4 / (5 + 5))
    assert (scores["held_kept"], scores["restruck_kept"]) == (0.0, 1.0)


def test_boundary_ties_count_held_and_restruck_notes_and_what_the_prediction_keeps():
    target = torch.zeros(88, 96, dtype=torch.bool)
    target[40, 16:48] = True  # held across step 32
    target[41, 0:31] = target[41, 32:64] = True  # struck again at 32
    target[42, 40:96] = True  # held across step 64
    target[43, 70:90] = True  # inside a quarter: neither
    prediction = target.clone()
    prediction[40, 31] = False  # the held note comes back struck again
    prediction[41, 31] = True  # the repeated note comes back held
    assert boundary_ties(target, prediction) == {"held": 2, "held_kept": 1, "restruck": 1, "restruck_kept": 0}
    assert boundary_ties(target, target) == {"held": 2, "held_kept": 2, "restruck": 1, "restruck_kept": 1}


def test_tie_weight_weighs_the_onset_cells_at_a_quarters_first_step_where_a_key_sounds():
    rolls = random_rolls(4, seed=3)
    model = VQVAE(dataclasses.replace(TINY, onset_weight=2.0, tie_weight=30.0))
    targets = model.channels(rolls).float()  # [4, 2, 88, 32]
    logits = torch.randn(targets.shape, generator=torch.Generator().manual_seed(0))
    cross_entropy = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weights = torch.ones_like(targets)
    weights[:, 1] = 2.0
    weights[:, 1, :, 0] = torch.where(targets[:, 0, :, 0] > 0, 60.0, 2.0)  # tie cells: 2 x 30
    expected = (weights * cross_entropy).sum() / weights.sum()
    assert model.reconstruction_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_export_run_ships_the_best_model_without_optimizer_state(tmp_path):
    model = VQVAE(TINY)
    optimizer = torch.optim.Adam(model.parameters())
    run = tmp_path / "run"
    save_checkpoint(run / "best.pt", "vq_vae", model.config, model, optimizer=optimizer.state_dict(), step=7)
    (run / "metrics.jsonl").write_text('{"step": 7}\n')
    shipped = export_run(run, "vq_vae", tmp_path / "models" / "vq_vae.pt")
    stored = torch.load(shipped, weights_only=True)
    assert "optimizer" not in stored and stored["step"] == 7
    loaded = VQVAE.from_checkpoint(shipped)
    assert all(torch.equal(t, loaded.state_dict()[name]) for name, t in model.state_dict().items())
    assert (tmp_path / "models" / "vq_vae_metrics.jsonl").read_text() == '{"step": 7}\n'


def test_a_decoder_with_context_hears_the_quarter_before_and_silence_before_the_first():
    torch.manual_seed(0)
    model = VQVAE(dataclasses.replace(TINY, decoder_context=True)).eval()
    model.quantizer.embedding.mul_(30)  # distinct codes decode to distinct music
    codes = torch.randint(8, (3, 16), generator=torch.Generator().manual_seed(1))
    silence = model.silence_codes()
    assert torch.equal(silence, model.encode(torch.zeros(1, 88, 32))[0])
    together = model.decode_channels(codes, previous=torch.stack([silence, codes[0], codes[1]]))
    assert torch.allclose(together[1:2], model.decode_channels(codes[1:2], previous=codes[0:1]))
    assert not torch.allclose(together[1:2], model.decode_channels(codes[1:2]))  # after silence instead
    expected = split_at_onsets(together[:, 0], together[:, 1])
    assert torch.equal(model.decode(codes), expected)
    after_first = model.decode(codes[1:], previous=codes[0])
    assert torch.equal(after_first, split_at_onsets(together[1:, 0], together[1:, 1]))
    alone = model.decode(codes[1:], consecutive=False, previous=codes[0])  # each after codes[0]
    assert torch.allclose(alone[1], model.decode(codes[2:], previous=codes[0])[0], atol=1e-6)


def test_a_model_with_decoder_context_trains_on_quarters_and_their_predecessors():
    from bachsformer.data import CorpusPiece, QuarterDataset

    pieces = [CorpusPiece(f"p{i}", (random_rolls(3, seed=i) > 0).numpy(), 9, 0) for i in range(2)]
    dataset = QuarterDataset(pieces, max_transpose=0, with_previous=True)
    quarters, before = dataset.batch(torch.tensor([0, 1, 3, 5]))
    assert not before[0].any() and not before[2].any()  # the first quarters of both pieces
    assert torch.equal(before[1], quarters[0]) and torch.equal(before[3], dataset.batch(torch.tensor([4]))[0][0])
    model = VQVAE(dataclasses.replace(TINY, decoder_context=True))
    output = model(quarters, before)
    assert output.logits.shape == (4, 2, 88, 32) and output.codes.shape == (4, 16)
    output.loss.backward()
    with pytest.raises(ValueError, match="decoder_context"):
        model(quarters)
