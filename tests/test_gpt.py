import dataclasses

import pytest
import torch

from bachsformer.checkpoint import save_checkpoint
from bachsformer.gpt import GPT, CandidateKeys, GPTConfig, KVCache
from bachsformer.melody import NONE
from bachsformer.melody import VOCAB_SIZE as MELODY_VOCAB_SIZE
from bachsformer.sampling import draw, gumbel

TINY = GPTConfig(vocab_size=16, block_size=47, n_layer=2, n_head=2, n_embd=32, dropout=0.0)


def tiny_model(seed: int = 0, config: GPTConfig = TINY) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def test_cached_forward_matches_the_full_forward():
    model = tiny_model()
    codes = torch.randint(16, (3, 40))
    full_logits, _ = model(codes)
    cache = KVCache(model.config, batch_size=3)
    prefix_logits, _ = model(codes[:, :25], cache=cache)  # a prefill of several positions
    step_logits = [model(codes[:, t : t + 1], cache=cache)[0] for t in range(25, 40)]  # then one at a time
    cached_logits = torch.cat([prefix_logits, *step_logits], dim=1)
    assert cache.length == 40
    assert torch.allclose(cached_logits, full_logits, atol=1e-5)


def test_decode_step_matches_the_full_forward():
    model = tiny_model(seed=2)
    codes = torch.randint(16, (3, 30))
    full_logits, _ = model(codes)
    cache = KVCache(model.config, batch_size=3)
    model(codes[:, :10], cache=cache)
    for t in range(10, 30):
        assert torch.allclose(model.decode_step(codes[:, t], cache), full_logits[:, t], atol=1e-5)
    assert cache.length == 30


HEARING = GPTConfig(
    vocab_size=8, block_size=31, n_layer=2, n_head=2, n_embd=16, dropout=0.0, codes_per_quarter=4, melody_quarters=2
)


def hearing_model(seed: int = 3, hears_mode: bool = False) -> GPT:
    """A tiny model that hears a melody (and its mode), loud enough that they move its logits."""
    model = tiny_model(seed, dataclasses.replace(HEARING, hears_mode=hears_mode))
    with torch.no_grad():
        model.melody_projection.weight.mul_(50)
        if hears_mode:
            model.mode_embedding.weight.mul_(50)
    return model


def test_the_mode_is_heard_with_the_melody_only():
    model = hearing_model(hears_mode=True)
    codes, melody = torch.randint(8, (2, 12)), torch.randint(MELODY_VOCAB_SIZE - 1, (2, 6, 8))
    major, minor = (model(codes, melody=melody, mode=torch.tensor([mode] * 2))[0] for mode in (0, 1))
    assert not torch.allclose(major, minor, atol=1e-3)
    unheard = torch.full_like(melody, NONE)  # no melody (free music, guidance's other group): no mode either
    free = [model(codes, melody=melody_or_none, mode=torch.tensor([mode] * 2))[0] for mode in (0, 1)
            for melody_or_none in (unheard, None)]  # fmt: skip
    assert all(torch.equal(free[0], logits) for logits in free[1:])
    with pytest.raises(ValueError, match="give mode"):
        model(codes, melody=melody)
    with pytest.raises(ValueError, match="hears_mode"):
        dataclasses.replace(HEARING, melody_quarters=0, hears_mode=True)


@pytest.mark.parametrize("num, hears_mode", [(5, False), (20, False), (20, True)])  # 20 of 8 codes share rows
def test_guided_candidates_are_the_draws_of_full_forward_passes_in_both_groups(num, hears_mode):
    model = hearing_model(hears_mode=hears_mode)
    mode = 1 if hears_mode else None
    heard_mode = torch.tensor([1]) if hears_mode else None
    context = torch.randint(8, (12,))  # three quarters
    melody = torch.randint(MELODY_VOCAB_SIZE - 1, (8, 8))  # [quarters, slots]: no NONE
    candidates = model.sample_candidates(
        context, num, 9, torch.Generator().manual_seed(4), temperature=0.8, melody=melody, guidance=2.5, mode=mode
    )
    noise = gumbel((num, 9, 8), torch.Generator().manual_seed(4))
    sequences = context.expand(num, -1)
    for n in range(9):
        heard = model(sequences, melody=melody[None], mode=heard_mode)[0][:, -1]
        unheard = model(sequences, melody=torch.full_like(melody, NONE)[None])[0][:, -1]
        logits = (unheard + 2.5 * (heard - unheard)) / 0.8
        sequences = torch.cat([sequences, draw(logits, noise[:, n])[:, None]], dim=1)
    assert torch.equal(candidates, sequences[:, 12:])  # every candidate's own positions beside the shared prefix


def test_candidate_steps_match_the_full_forward_of_each_row_after_its_group_context():
    model = hearing_model()
    context, melody = torch.randint(8, (8,)), torch.randint(MELODY_VOCAB_SIZE - 1, (6, 8))
    shared = model.shared_context(context, melody, guidance=2.0)  # group 0 hears the melody, group 1 none
    melodies = torch.stack([melody, torch.full_like(melody, NONE)])  # [G, quarters, slots]
    rows, steps = 3, 6
    keys = CandidateKeys(shared.prefix, rows, steps)
    heard = model.melody_vectors(melodies, 2, 4).repeat_interleave(rows, dim=0)  # [G * R, quarters, C]
    fed = torch.randint(8, (2 * rows, steps))  # each row's own codes, different in every row
    entries = len(context) + torch.arange(steps)[None] * rows + torch.arange(rows)[:, None]  # [R, steps]
    for position in range(steps):
        quarter = (len(context) + position + 1) // HEARING.codes_per_quarter
        visible = keys.visible(entries[:, : position + 1])
        weights = model.decode_weights()
        logits = model.candidate_step(fed[:, position], keys, position, weights, heard[:, quarter], visible)
        sequences = torch.cat([context.expand(2 * rows, -1), fed[:, : position + 1]], dim=1)
        for group in range(2):
            expected = model(sequences[group * rows : (group + 1) * rows], melody=melodies[group : group + 1])[0]
            assert torch.allclose(logits[group * rows : (group + 1) * rows], expected[:, -1], atol=1e-5)


@pytest.mark.parametrize("hears_mode", [False, True])
def test_a_context_run_quarter_by_quarter_equals_one_run_at_once(hears_mode):
    model = hearing_model(hears_mode=hears_mode)
    mode = 1 if hears_mode else None
    context, melody = torch.randint(8, (16,)), torch.randint(MELODY_VOCAB_SIZE - 1, (6, 8))
    grown = None
    for quarters in range(5):  # appended to the cache a quarter at a time
        grown = model.shared_context(context[: 4 * quarters], melody, 3.0, earlier=grown, mode=mode)
    whole = model.shared_context(context, melody, 3.0, mode=mode)
    assert grown.prefix.length == whole.prefix.length == 16 and grown.groups == 2
    assert torch.allclose(grown.prefix.keys, whole.prefix.keys, atol=1e-5)
    assert torch.allclose(grown.prefix.values, whole.prefix.values, atol=1e-5)
    assert torch.allclose(grown.logits, whole.logits, atol=1e-5)
    # scoring reads group 0, the one that hears the melody, as the full forward pass does
    continuations = torch.randint(8, (3, 4))
    sequences = torch.cat([context.expand(3, -1), continuations], dim=1)
    heard_mode = torch.tensor([1]) if hears_mode else None
    log_probs = torch.log_softmax(model(sequences[:, :-1], melody=melody[None], mode=heard_mode)[0], dim=-1)
    expected = log_probs[:, 15:].gather(-1, continuations[..., None]).squeeze(-1).sum(-1)
    assert torch.allclose(model.log_likelihood_after(grown, continuations), expected, atol=1e-5)
    assert torch.allclose(model.continuation_log_likelihood(context, continuations, melody, mode), expected, atol=1e-5)


def test_positions_beyond_the_block_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, TINY.block_size + 1, dtype=torch.long))


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(TINY)
    batch = torch.randint(16, (4, 33))
    optimizer = model.configure_optimizer(learning_rate=3e-3, weight_decay=0.0)
    for _ in range(150):
        _, loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_weight_decay_applies_to_matrices_only():
    model = tiny_model()
    optimizer = model.configure_optimizer(learning_rate=1e-3, weight_decay=0.1)
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    for name, parameter in model.named_parameters():
        expected = parameter.dim() >= 2 and "embedding" not in name
        assert (id(parameter) in decayed) == expected, name


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    model = tiny_model(seed=3)
    model.first_code_probs.copy_(torch.softmax(torch.randn(16), 0))
    save_checkpoint(tmp_path / "gpt.pt", "transformer", model.config, model, vq_vae_fingerprint="abc")
    loaded = GPT.from_checkpoint(tmp_path / "gpt.pt")
    codes = torch.randint(16, (2, 30))
    assert torch.equal(model(codes)[0], loaded(codes)[0])
    assert torch.equal(model.first_code_probs, loaded.first_code_probs)
    assert loaded.checkpoint_info["vq_vae_fingerprint"] == "abc"


def test_generate_length_and_prompt_are_kept():
    model = tiny_model()
    prompt = torch.randint(16, (2, 20))
    out = model.generate(prompt, 100, seeds=[1, 2], codes_per_quarter=16, min_context=16)
    assert out.shape == (2, 120)
    assert torch.equal(out[:, :20], prompt)
    assert out.min() >= 0 and out.max() < 16


def test_generate_without_prompt_counts_the_opening_code():
    out = tiny_model().generate(None, 64, seeds=[5], min_context=16)
    assert out.shape == (1, 64)


def test_generate_is_deterministic_and_each_piece_has_its_own_stream():
    model = tiny_model()
    batch = model.generate(None, 120, seeds=[7, 8, 9], min_context=16)
    again = model.generate(None, 120, seeds=[7, 8, 9], min_context=16)
    alone = model.generate(None, 120, seeds=[8], min_context=16)
    assert torch.equal(batch, again)
    assert torch.equal(batch[1:2], alone)
    assert not torch.equal(batch[0], batch[1])


def test_cached_generation_equals_the_naive_window_recomputation():
    # 200 codes through a 47-code block: the window jumps several times.
    model = tiny_model()
    cached = model.generate(None, 200, seeds=[3, 4], min_context=16, use_cache=True)
    naive = model.generate(None, 200, seeds=[3, 4], min_context=16, use_cache=False)
    assert torch.equal(cached, naive)


def test_every_code_sees_between_min_context_and_block_size_codes(monkeypatch):
    model = tiny_model()
    seen = []  # context length behind each drawn code
    original_forward, original_step = GPT.forward, GPT.decode_step

    def recording_forward(self, idx, targets=None, cache=None, melody=None):
        seen.append((cache.length if cache is not None else 0) + idx.shape[1])
        return original_forward(self, idx, targets, cache, melody)

    def recording_step(self, codes, cache, weights=None, heard=None):
        seen.append(cache.length + 1)
        return original_step(self, codes, cache, weights, heard)

    monkeypatch.setattr(GPT, "forward", recording_forward)
    monkeypatch.setattr(GPT, "decode_step", recording_step)
    model.generate(torch.randint(16, (1, 16)), 300, seeds=[0], min_context=16)
    assert len(seen) == 300
    assert min(seen) >= 16 and max(seen) == TINY.block_size


def test_generation_options_are_checked():
    model = tiny_model()
    for options, message in [
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": 17}, "top-k"),
        ({"top_p": 0.0}, "top-p"),
        ({"top_p": 1.5}, "top-p"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.generate(None, 10, seeds=[0], min_context=16, **options)
