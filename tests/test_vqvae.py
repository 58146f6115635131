"""The VQ-VAE over four voices: its input planes, codes, decoding to lines, context, checkpoints, scores, training."""

import dataclasses

import numpy as np
import pytest
import torch

from bachsformer.checkpoint import CheckpointError, export_run, save_checkpoint
from bachsformer.compose import decode_voices
from bachsformer.midi import LOWEST_PITCH, NUM_KEYS
from bachsformer.voices import SILENCE, from_lines
from bachsformer.vqvae import VQVAE, VQVAEConfig, reconstruction_scores, voice_channels

TINY = VQVAEConfig(num_embeddings=8, embedding_dim=8, hidden_channels=8, residual_layers=1, residual_channels=8)
RANGES = ((39, 55), (34, 48), (27, 41), (15, 33))  # keys (MIDI pitch - 21) of S, A, T, B


def random_lines(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lines of n quarters of four voices: keys long [n, 4, 32] (notes of 4-16 steps, some rests), onsets bool."""
    generator = torch.Generator().manual_seed(seed)
    keys = torch.full((n, 4, 32), SILENCE, dtype=torch.long)
    onsets = torch.zeros(n, 4, 32, dtype=torch.bool)
    for quarter in range(n):
        for voice, (low, high) in enumerate(RANGES):
            step = 0
            while step < 32:
                length = int(torch.randint(4, 17, (1,), generator=generator))
                if int(torch.randint(0, 5, (1,), generator=generator)):  # one note in five a rest
                    key = int(torch.randint(low, high, (1,), generator=generator))
                    keys[quarter, voice, step : step + length] = key
                    onsets[quarter, voice, step] = True
                step += length
    return keys, onsets


def test_voice_channels_are_one_key_per_voice_and_step_and_its_onsets():
    keys = torch.full((1, 4, 32), SILENCE)
    onsets = torch.zeros(1, 4, 32, dtype=torch.bool)
    keys[0, 0, :16], onsets[0, 0, 0] = 40, True  # Soprano: a note, then a rest
    keys[0, 3, :], onsets[0, 3, [0, 8]] = 10, True  # Bass: two notes of one key
    channels = voice_channels(keys, onsets)
    assert channels.shape == (1, 8, NUM_KEYS, 32)
    assert channels[0, 0].sum() == 16 and channels[0, 0, 40, :16].all()  # a rest is no key at all
    assert channels[0, 3].sum() == 32 and channels[0, 3, 10].all()
    assert channels[0, 1:3].sum() == 0  # silent voices
    assert channels[0, 4].nonzero().tolist() == [[40, 0]]
    assert channels[0, 7].nonzero().tolist() == [[10, 0], [10, 8]]


def test_encode_decode_shapes():
    model = VQVAE(TINY).eval()
    codes = model.encode(*random_lines(5))
    assert codes.shape == (5, 16) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < TINY.num_embeddings
    keys, onsets = model.decode(codes)
    assert keys.shape == onsets.shape == (5, 4, 32)
    assert keys.dtype == torch.long and onsets.dtype == torch.bool
    assert keys.min() >= 0 and keys.max() <= SILENCE
    assert not (onsets & (keys == SILENCE)).any()  # a rest starts no note


def test_decode_of_encode_matches_the_forward_pass():
    model = VQVAE(TINY).eval()
    model.quantizer.embedding.mul_(30)
    keys, onsets = random_lines(4)
    output = model(keys, onsets)
    assert output.key_logits.shape == (4, 4, NUM_KEYS + 1, 32) and output.onset_logits.shape == (4, 4, NUM_KEYS, 32)
    assert torch.equal(model.encode(keys, onsets), output.codes)
    key_logits, onset_logits = model.decode_logits(output.codes)
    assert torch.allclose(key_logits, output.key_logits, atol=1e-5)
    assert torch.allclose(onset_logits, output.onset_logits, atol=1e-5)
    decoded_keys, decoded_onsets = model.decode(output.codes)
    expected_keys = output.key_logits.argmax(dim=2)
    at_key = output.onset_logits.gather(2, expected_keys.clamp(max=NUM_KEYS - 1)[:, :, None])[:, :, 0]
    assert torch.equal(decoded_keys, expected_keys)
    assert torch.equal(decoded_onsets, (at_key > 0) & (expected_keys != SILENCE))


def test_each_quarter_is_encoded_alone():
    model = VQVAE(TINY).eval()
    keys, onsets = random_lines(5, seed=1)
    together = model.encode(keys, onsets, batch_size=2)
    alone = torch.cat([model.encode(keys[n : n + 1], onsets[n : n + 1]) for n in range(5)])
    assert torch.equal(together, alone)
    struck = onsets.clone()
    struck[2] = keys[2] != SILENCE  # every step struck again: other music, other input
    assert not torch.equal(voice_channels(keys[2:3], struck[2:3]), voice_channels(keys[2:3], onsets[2:3]))


def test_inference_layouts_compute_what_the_layers_do():
    torch.manual_seed(3)
    model = VQVAE(dataclasses.replace(TINY, decoder_context=True)).eval()
    keys, onsets = random_lines(4)
    inputs = voice_channels(keys, onsets)
    assert torch.allclose(model.encode_latents(inputs), model.encoder(inputs), atol=1e-5)
    before_keys, before_onsets = random_lines(4, seed=9)
    output = model(keys, onsets, before_keys, before_onsets)  # the library's layers, the codes straight through
    key_logits, onset_logits = model.decode_logits(output.codes, previous=model.encode(before_keys, before_onsets))
    assert torch.allclose(key_logits, output.key_logits, atol=1e-4)
    assert torch.allclose(onset_logits, output.onset_logits, atol=1e-4)


def reproducing(model: VQVAE, keys: torch.Tensor, onsets: torch.Tensor) -> VQVAE:
    """`model` with decode_logits giving logits whose likeliest values are lines keys, onsets [N, V, 32] exactly,
    as a VQ-VAE that reproduces them would (whatever the codes)."""

    def decode_logits(codes, previous=None):
        key_logits = torch.nn.functional.one_hot(keys, NUM_KEYS + 1).transpose(-1, -2).float() * 20 - 10
        struck = voice_channels(keys, onsets)[:, model.num_voices :]  # [N, V, 88, 32]
        return key_logits[: len(codes)], (struck * 20 - 10)[: len(codes)]

    model.decode_logits = decode_logits
    return model


def test_a_held_note_across_a_quarter_boundary_comes_back_one_note_and_a_restruck_note_two():
    keys = torch.full((2, 4, 32), SILENCE)
    onsets = torch.zeros(2, 4, 32, dtype=torch.bool)
    keys[0, 0, 16:], keys[1, 0, :8] = 50, 50  # Soprano holds 50 across the boundary: one onset
    onsets[0, 0, 16] = True
    keys[0, 1, 8:], keys[1, 1, :16] = 40, 40  # Alto strikes 40 again at the next quarter's first step
    onsets[0, 1, 8] = onsets[1, 1, 0] = True
    keys[:, 3, :], onsets[:, 3, 0] = 20, True  # Bass: a note per quarter on one key
    model = reproducing(VQVAE(TINY).eval(), keys, onsets)
    codes = torch.zeros(2, 16, dtype=torch.long)
    decoded_keys, decoded_onsets = model.decode(codes)
    assert torch.equal(decoded_keys, keys) and torch.equal(decoded_onsets, onsets)
    voices = decode_voices(model, codes.flatten())
    assert voices.notes[0].tolist() == [[16, 40, 50 + LOWEST_PITCH]]
    assert voices.notes[1].tolist() == [[8, 32, 40 + LOWEST_PITCH], [32, 48, 40 + LOWEST_PITCH]]
    assert voices.notes[2].tolist() == []
    assert voices.notes[3].tolist() == [[0, 32, 20 + LOWEST_PITCH], [32, 64, 20 + LOWEST_PITCH]]
    held = voices.quarters()  # the roll of the union: the held note sounds on through the boundary
    assert held[0, 50, 16:].all() and held[1, 50, :8].all()


def test_a_decoder_with_context_hears_the_quarter_before_and_silence_before_the_first():
    torch.manual_seed(0)
    model = VQVAE(dataclasses.replace(TINY, decoder_context=True)).eval()
    model.quantizer.embedding.mul_(30)  # distinct codes decode to distinct music
    codes = torch.randint(8, (3, 16), generator=torch.Generator().manual_seed(1))
    silence = model.silence_codes()
    silent_keys = torch.full((1, 4, 32), SILENCE)
    assert torch.equal(silence, model.encode(silent_keys, torch.zeros(1, 4, 32, dtype=torch.bool))[0])
    keys_logits, onset_logits = model.decode_logits(codes, previous=torch.stack([silence, codes[0], codes[1]]))
    after_first = model.decode_logits(codes[1:2], previous=codes[0:1])
    assert torch.allclose(keys_logits[1:2], after_first[0], atol=1e-5)
    assert torch.allclose(onset_logits[1:2], after_first[1], atol=1e-5)
    assert not torch.allclose(keys_logits[1:2], model.decode_logits(codes[1:2])[0], atol=1e-3)  # after silence

    def lines(key_logits, onset_logits):
        keys = key_logits.argmax(dim=2)
        at_key = onset_logits.gather(2, keys.clamp(max=NUM_KEYS - 1)[:, :, None])[:, :, 0]
        return keys, (at_key > 0) & (keys != SILENCE)

    expected = lines(keys_logits, onset_logits)
    decoded = model.decode(codes, batch_size=2)  # parts of a piece hear the quarter before them, across parts too
    assert torch.equal(decoded[0], expected[0]) and torch.equal(decoded[1], expected[1])
    continued = model.decode(codes[1:], previous=codes[0])
    assert torch.equal(continued[0], expected[0][1:]) and torch.equal(continued[1], expected[1][1:])
    alone = model.decode(codes[1:], consecutive=False, previous=codes[0])  # each after codes[0]
    assert torch.equal(alone[0][1], model.decode(codes[2:], previous=codes[0])[0][0])
    without = VQVAE(TINY).eval()  # a model without context hears nothing before
    plain = without.decode(codes)
    assert torch.equal(without.decode(codes, previous=codes[2])[0], plain[0])


def test_a_model_with_decoder_context_trains_on_quarters_and_their_predecessors():
    from bachsformer.data import CorpusPiece, VoiceQuarterDataset

    pieces = []
    for number in range(2):
        voices = from_lines(*(part.numpy() for part in random_lines(3, seed=number)))
        pieces.append(CorpusPiece(f"p{number}", voices.quarters(), 9, 0, voices=voices))
    dataset = VoiceQuarterDataset(pieces, max_transpose=0, with_previous=True)
    keys, onsets, before_keys, before_onsets = dataset.batch(torch.tensor([0, 1, 3, 5]))
    assert (before_keys[[0, 2]] == SILENCE).all() and not before_onsets[[0, 2]].any()  # the pieces' first quarters
    assert torch.equal(before_keys[1], keys[0]) and torch.equal(before_onsets[1], onsets[0])
    assert torch.equal(before_keys[3], dataset.batch(torch.tensor([4]))[0][0])
    model = VQVAE(dataclasses.replace(TINY, decoder_context=True))
    output = model(keys, onsets, before_keys, before_onsets)
    assert output.key_logits.shape == (4, 4, NUM_KEYS + 1, 32) and output.codes.shape == (4, 16)
    output.loss.backward()
    with pytest.raises(ValueError, match="decoder_context"):
        model(keys, onsets)
    with pytest.raises(ValueError, match="decoder_context"):
        VQVAE(TINY)(keys, onsets, before_keys, before_onsets)


def test_bad_shapes_and_codes_are_refused():
    model = VQVAE(TINY).eval()
    keys, onsets = random_lines(2)
    with pytest.raises(ValueError, match=r"keys and onsets must both be \[N, 4, 32\]"):
        model.encode(keys[:, :3], onsets[:, :3])
    with pytest.raises(ValueError, match="keys and onsets must both be"):
        model.encode(keys, onsets[:, :, :16])
    with pytest.raises(ValueError, match="codes must lie"):
        model.decode(torch.full((1, 16), TINY.num_embeddings))
    with pytest.raises(ValueError, match=r"codes must be \[N, 16\]"):
        model.decode_logits(torch.zeros(1, 15, dtype=torch.long))


def test_training_lowers_the_loss_and_moves_the_codebook():
    torch.manual_seed(0)
    model = VQVAE(TINY)
    keys, onsets = random_lines(32)
    codebook_before = model.quantizer.embedding.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = model(keys, onsets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]  # random keys through 8 codes: the keys' cross-entropy stays well above 0
    assert not torch.equal(model.quantizer.embedding, codebook_before)


def test_eval_mode_leaves_the_codebook_alone():
    model = VQVAE(TINY).eval()
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    model(*random_lines(4))
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
    assert torch.equal(quantizer.cluster_size, torch.full((TINY.num_embeddings,), TINY.dead_code_threshold))


def test_checkpoint_round_trip_keeps_weights_and_codebook(tmp_path):
    torch.manual_seed(1)
    model = VQVAE(TINY)
    model(*random_lines(8))  # a training-mode pass moves the EMA buffers off their init
    model.eval()
    save_checkpoint(tmp_path / "vq.pt", "vq_vae", model.config, model)
    loaded = VQVAE.from_checkpoint(tmp_path / "vq.pt")
    assert loaded.config == model.config and loaded.num_voices == 4
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    keys, onsets = random_lines(3, seed=5)
    codes = model.encode(keys, onsets)
    assert torch.equal(codes, loaded.encode(keys, onsets))
    for mine, theirs in zip(model.decode(codes), loaded.decode(codes), strict=True):
        assert torch.equal(mine, theirs)


def test_a_roll_vq_vae_from_before_the_voices_is_refused_in_one_line(tmp_path):
    model = VQVAE(TINY)
    save_checkpoint(tmp_path / "old.pt", "vq_vae", model.config, model)
    stored = torch.load(tmp_path / "old.pt", weights_only=True)
    del stored["config"]["voices"], stored["config"]["tie_weight"]
    stored["config"].update(onset_channel=True, transition_weight=1.0)  # as the roll VQ-VAE's config was
    torch.save(stored, tmp_path / "old.pt")
    with pytest.raises(CheckpointError) as refused:
        VQVAE.from_checkpoint(tmp_path / "old.pt")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'old.pt'}: ")
    assert "from before the voices" in message and "python train_vq_vae.py" in message


def test_reconstruction_scores_are_exact_on_known_input():
    model = VQVAE(TINY).eval()
    keys = torch.full((2, 4, 32), SILENCE)
    onsets = torch.zeros(2, 4, 32, dtype=torch.bool)
    keys[0, 0, :], keys[1, 0, :16] = 50, 50  # Soprano: held across the boundary
    onsets[0, 0, 0] = True
    keys[:, 1, :] = 40  # Alto: struck again at the boundary
    onsets[:, 1, 0] = True
    keys[0, 2, :8], keys[0, 2, 8:16] = 30, 30  # Tenor: a repeated note inside the first quarter
    onsets[0, 2, [0, 8]] = True
    keys[:, 3, :], onsets[0, 3, 0] = 20, True  # Bass: held through the piece
    predicted_keys, predicted_onsets = keys.clone(), onsets.clone()
    predicted_onsets[1, 0, 0] = True  # the held Soprano comes back struck again
    predicted_onsets[0, 2, 8] = False  # the repeated Tenor note merges with the first
    predicted_keys[1, 3, 24:] = 19  # the Bass changes key for the last 8 steps: a new note
    model.decode = lambda codes, batch_size: (predicted_keys, predicted_onsets)
    scores = reconstruction_scores(model, [(keys.numpy(), onsets.numpy())])
    assert [scores[f"voice_{n}"] for n in range(4)] == [1.0, 1.0, 1.0, 56 / 64]
    assert [scores[f"voice_{n}_sixteenths"] for n in range(4)] == [1.0, 1.0, 1.0, 7 / 8]
    assert scores["voice_agreement"] == pytest.approx((64 * 3 + 56) / 256)
    true_starts, predicted_starts = 1 + 2 + 2 + 1, 2 + 2 + 1 + 2  # per voice, S A T B
    matched = 1 + 2 + 1 + 1  # the Soprano's and Bass's first notes, both Alto notes, the Tenor's first
    assert scores["onset_f1"] == pytest.approx(2 * matched / (true_starts + predicted_starts))
    assert (scores["held_kept"], scores["restruck_kept"]) == (1 / 2, 1.0)  # Soprano restruck, Bass held; Alto
    assert scores["codes_used"] >= 1 and scores["perplexity"] >= 1.0
    assert all(type(value) in (float, int) for value in scores.values())  # JSON-ready: no numpy scalars

    perfect = VQVAE(TINY).eval()
    perfect.decode = lambda codes, batch_size: (keys, onsets)
    exact = reconstruction_scores(perfect, [(keys.numpy(), onsets.numpy())])
    assert exact["voice_agreement"] == exact["onset_f1"] == exact["held_kept"] == exact["restruck_kept"] == 1.0


def test_tie_weight_weighs_the_onsets_at_a_quarters_first_step_where_a_voice_sounds():
    keys, onsets = random_lines(4, seed=3)
    model = VQVAE(dataclasses.replace(TINY, onset_weight=2.0, tie_weight=30.0))
    generator = torch.Generator().manual_seed(0)
    key_logits = torch.randn(4, 4, NUM_KEYS + 1, 32, generator=generator)
    onset_logits = torch.randn(4, 4, NUM_KEYS, 32, generator=generator)
    per_step = key_logits.permute(0, 1, 3, 2).reshape(-1, NUM_KEYS + 1)  # [N * V * S, 89]
    key_loss = torch.nn.functional.cross_entropy(per_step, keys.flatten())
    sounding = keys != SILENCE
    at_key = onset_logits.gather(2, keys.clamp(max=NUM_KEYS - 1)[:, :, None])[:, :, 0]
    onset_loss = torch.nn.functional.binary_cross_entropy_with_logits(at_key, onsets.float(), reduction="none")
    weights = sounding.float()
    weights[:, :, 0] *= 30.0  # where a note goes on from the quarter before or starts again
    assert (weights[:, :, 0] == 30.0).any() and (weights == 0).any()  # ties weighed, rests not at all
    expected = key_loss + 2.0 * (weights * onset_loss).sum() / weights.sum()
    loss = model.reconstruction_loss(key_logits, onset_logits, keys, onsets)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = VQVAE(dataclasses.replace(TINY, onset_weight=2.0))
    assert plain.reconstruction_loss(key_logits, onset_logits, keys, onsets).item() != pytest.approx(loss.item())


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


def test_config_refuses_sizes_no_model_can_have():
    with pytest.raises(ValueError, match="voices: must be at least 1"):
        VQVAEConfig(voices=0)
    with pytest.raises(ValueError, match="tie_weight: must be above 0"):
        VQVAEConfig(tie_weight=0.0)
    assert np.isclose(VQVAEConfig().tie_weight, 1.0)


def test_no_codes_decode_to_no_quarters():
    model = VQVAE(dataclasses.replace(TINY, decoder_context=True)).eval()
    keys, onsets = model.decode(torch.zeros(0, model.codes_per_quarter, dtype=torch.long))
    assert keys.shape == onsets.shape == (0, model.num_voices, 32) and onsets.dtype == torch.bool
