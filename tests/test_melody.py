"""The melody condition: slot tokens, which codes hear which quarter's melody, dropout, guidance, old checkpoints."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bachsformer.data import CodeWindowDataset, EncodedPiece
from bachsformer.gpt import GPT, GPTConfig
from bachsformer.melody import NONE, REST, SLOTS_PER_QUARTER, melody_tokens, transpose_tokens, window_melody
from bachsformer.midi import LOWEST_PITCH, NUM_KEYS
from bachsformer.sampling import draw, filter_logits, gumbel

LOOKAHEAD = 3
TINY = GPTConfig(vocab_size=16, block_size=63, n_layer=2, n_head=2, n_embd=32, dropout=0.0, melody_quarters=LOOKAHEAD)
OLD_CHECKPOINT = Path(__file__).parent / "data" / "transformer_before_melody.pt"


def conditioned_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(TINY).eval()


def token(pitch: int, onset: bool) -> int:
    return 1 + 2 * (pitch - LOWEST_PITCH) + int(onset)


def test_melody_tokens_name_each_sixteenth_pitch_and_onset_or_rest():
    melody = np.zeros((2, NUM_KEYS, 32), dtype=bool)
    c5, d5 = 72 - LOWEST_PITCH, 74 - LOWEST_PITCH
    melody[0, c5, 0:16] = True  # an eighth note
    melody[0, d5, 16:32] = melody[1, d5, 0:7] = True  # held across the boundary, then rest
    melody[1, d5, 9:14] = True  # an offbeat note starting inside slot 2
    tokens = melody_tokens(melody)
    c, d = token(72, True), token(74, True)
    assert tokens[0].tolist() == [c, c - 1, c - 1, c - 1, d, d - 1, d - 1, d - 1]
    assert tokens[1].tolist() == [d - 1, d - 1, d, d - 1, REST, REST, REST, REST]


def test_transposed_tokens_move_sounding_slots_only_and_windows_end_in_rests():
    tokens = torch.tensor([[REST, token(60, True), token(60, False), NONE] * 2])
    assert transpose_tokens(tokens, 2).tolist() == [[REST, token(62, True), token(62, False), NONE] * 2]
    window = window_melody(tokens, 0, 3)
    assert window.shape == (3, SLOTS_PER_QUARTER) and (window[1:] == REST).all()


@pytest.mark.parametrize("changed_quarter", [3, 5])
def test_changing_a_quarters_melody_changes_only_the_codes_that_hear_it(changed_quarter):
    model = conditioned_model()
    codes = torch.randint(16, (1, 63), generator=torch.Generator().manual_seed(1))
    melody = torch.randint(NONE, (1, 4 + LOOKAHEAD - 1, SLOTS_PER_QUARTER), generator=torch.Generator().manual_seed(2))
    other = melody.clone()
    other[0, changed_quarter] = (other[0, changed_quarter] + 7) % NONE
    with torch.no_grad():
        before, after = model(codes, melody=melody)[0], model(codes, melody=other)[0]
    changed = (before - after).abs().amax(dim=-1)[0] > 1e-6  # [63]: input position t predicts code t + 1
    predicted_quarter = (torch.arange(63) + 1) // 16
    # quarter q hears quarters q ... q + LOOKAHEAD - 1, and later codes attend to earlier ones: every
    # code from quarter k - LOOKAHEAD + 1 on changes (quarter k's own first code too), none before
    assert torch.equal(changed, predicted_quarter >= changed_quarter - LOOKAHEAD + 1)


def test_dropout_gives_the_logits_of_no_melody():
    codes = torch.randint(16, (1, 3 * 16), generator=torch.Generator().manual_seed(0))
    piece = EncodedPiece("a", 0, codes)
    melody = torch.from_numpy(np.full((3, SLOTS_PER_QUARTER), token(72, True)))
    dropped = CodeWindowDataset([piece], 32, 16, [melody], LOOKAHEAD, melody_dropout=1.0)
    kept = CodeWindowDataset([piece], 32, 16, [melody], LOOKAHEAD, melody_dropout=0.0)
    inputs, _, no_melody = dropped.batch(torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    _, _, with_melody = kept.batch(torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    assert (no_melody == NONE).all() and no_melody.shape == (2, 2 + LOOKAHEAD - 1, SLOTS_PER_QUARTER)
    # window 0 hears quarters 0 ... 3 of a 3-quarter piece, window 1 quarters 1 ... 4: REST past the end
    assert (with_melody[0, :3] == token(72, True)).all() and (with_melody[0, 3:] == REST).all()
    assert (with_melody[1, :2] == token(72, True)).all() and (with_melody[1, 2:] == REST).all()
    model = conditioned_model()
    with torch.no_grad():
        assert torch.equal(model(inputs, melody=no_melody)[0], model(inputs)[0])
        assert not torch.allclose(model(inputs, melody=with_melody)[0], model(inputs)[0])


def test_windows_carry_their_pieces_modes_and_a_mode_needs_a_melody():
    pieces = [EncodedPiece(name, 0, torch.zeros(1, 3 * 16, dtype=torch.long)) for name in "ab"]
    melodies = [torch.full((3, SLOTS_PER_QUARTER), token(72, True))] * 2
    dataset = CodeWindowDataset(pieces, 32, 16, melodies, LOOKAHEAD, modes=[0, 1])
    assert dataset.batch(torch.tensor([0, 1, 2, 3]))[3].tolist() == [0, 0, 1, 1]  # two windows a piece
    with pytest.raises(ValueError, match="melod"):
        CodeWindowDataset(pieces, 32, 16, modes=[0, 1])


def test_the_fast_step_and_the_shared_cache_hear_the_melody_as_the_full_forward_does():
    model = conditioned_model().double()  # float64: the cached and full paths round alike
    context = torch.randint(16, (32,), generator=torch.Generator().manual_seed(4))
    melody = torch.randint(NONE, (4, SLOTS_PER_QUARTER), generator=torch.Generator().manual_seed(5))
    candidates = model.sample_candidates(context, 3, 16, torch.Generator().manual_seed(6), melody=melody)
    # the candidates are what the full forward, hearing the melody, draws with the same noise:
    # this holds only if decode_step adds each predicted code's own quarter's melody vector
    noise = gumbel((3, 16, 16), torch.Generator().manual_seed(6))
    drawn = context.expand(3, -1)
    with torch.no_grad():
        for n in range(16):
            logits = model(drawn, melody=melody.expand(3, -1, -1))[0][:, -1]
            drawn = torch.cat([drawn, draw(filter_logits(logits), noise[:, n])[:, None]], dim=1)
    assert torch.equal(candidates, drawn[:, 32:])
    # and each candidate's log-likelihood through the shared cache equals the full forward's
    with torch.no_grad():
        logits = model(drawn[:, :-1], melody=melody.expand(3, -1, -1))[0][:, 31:]
    expected = torch.log_softmax(logits, -1).gather(-1, candidates[..., None]).squeeze(-1).sum(-1)
    assert torch.allclose(model.continuation_log_likelihood(context, candidates, melody), expected.float(), atol=1e-4)


def test_guidance_one_is_the_melody_alone_and_other_scales_change_the_draw():
    model = conditioned_model().double()  # float64: batches of other sizes round alike
    context = torch.randint(16, (16,), generator=torch.Generator().manual_seed(4))
    melody = torch.randint(NONE, (3, SLOTS_PER_QUARTER), generator=torch.Generator().manual_seed(5))

    def draw(**options):
        return model.sample_candidates(context, 64, 16, torch.Generator().manual_seed(6), melody=melody, **options)

    assert torch.equal(draw(), draw(guidance=1.0))
    assert not torch.equal(draw(), draw(guidance=3.0))
    # guidance 0 is the model without its melody
    no_melody = model.sample_candidates(context, 64, 16, torch.Generator().manual_seed(6))
    assert torch.equal(draw(guidance=0.0), no_melody)


def test_a_model_without_the_condition_refuses_a_melody():
    model = GPT(GPTConfig(vocab_size=16, block_size=47, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="without a melody condition"):
        model(torch.zeros(1, 4, dtype=torch.long), melody=torch.zeros(1, 1, SLOTS_PER_QUARTER, dtype=torch.long))


def test_a_checkpoint_from_before_the_melody_condition_writes_the_same_codes():
    # tests/data/transformer_before_melody.pt and these codes were written by git ebccb61
    model = GPT.from_checkpoint(OLD_CHECKPOINT)
    assert model.config.melody_quarters == 0
    codes = model.generate(None, 70, seeds=[0, 1], min_context=16)
    assert codes[0, :16].tolist() == [7, 10, 5, 3, 5, 1, 4, 1, 14, 2, 10, 14, 15, 13, 9, 12]
    assert codes[1, -12:].tolist() == [1, 0, 4, 11, 3, 3, 8, 12, 14, 5, 1, 11]
    context = torch.arange(16) % 16
    candidates = model.sample_candidates(context, 4, 16, torch.Generator().manual_seed(3))
    assert candidates[1].tolist() == [0, 15, 6, 13, 0, 1, 2, 10, 6, 11, 5, 12, 3, 15, 3, 10]
    likelihoods = model.continuation_log_likelihood(context, candidates)
    assert likelihoods.tolist() == pytest.approx([-43.6222, -44.9668, -44.4328, -43.8223], abs=1e-3)


def test_each_evaluation_window_gets_the_melody_of_its_own_quarters_and_those_heard_ahead():
    from bachsformer.codes import evaluation_melodies, evaluation_windows

    pieces = [EncodedPiece("a", 0, torch.arange(5 * 16)[None] % 16), EncodedPiece("b", 0, torch.zeros(1, 16))]
    tokens = [torch.arange(5)[:, None].expand(5, SLOTS_PER_QUARTER) + 1, torch.full((1, SLOTS_PER_QUARTER), 9)]
    windows = evaluation_windows(pieces, 32)  # piece a: quarters 0-1, 2-3, 4; piece b: quarter 0
    melodies = evaluation_melodies(pieces, tokens, 32, 16, heard_ahead=2)
    assert [len(w) for w in windows] == [32, 32, 16, 16] and len(melodies) == len(windows)
    assert [m[:, 0].tolist() for m in melodies] == [[1, 2, 3], [3, 4, 5], [5, REST, REST], [9, REST, REST]]
