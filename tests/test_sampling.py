import torch

from bachsformer.sampling import draw, filter_logits, piece_uniforms

LOGITS = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))


def test_no_filter_keeps_the_distribution():
    assert torch.allclose(filter_logits(LOGITS), torch.tensor([[0.5, 0.25, 0.15, 0.1]]))


def test_top_k_keeps_the_k_likeliest():
    probs = filter_logits(LOGITS, top_k=2)
    assert torch.allclose(probs, torch.tensor([[2 / 3, 1 / 3, 0.0, 0.0]]))


def test_top_p_keeps_the_smallest_set_holding_the_mass():
    assert torch.allclose(filter_logits(LOGITS, top_p=0.7), torch.tensor([[2 / 3, 1 / 3, 0.0, 0.0]]))
    assert torch.allclose(filter_logits(LOGITS, top_p=0.5), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(filter_logits(LOGITS, top_p=0.1), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_temperature_sharpens_and_flattens():
    cold = filter_logits(LOGITS, temperature=0.5)
    hot = filter_logits(LOGITS, temperature=2.0)
    assert cold[0, 0] > 0.5 > hot[0, 0]


def test_draw_inverts_the_cumulative_distribution():
    probs = torch.tensor([[0.5, 0.25, 0.0, 0.25]]).expand(5, -1)
    uniforms = torch.tensor([0.0, 0.49, 0.5, 0.76, 0.999999])
    assert draw(probs, uniforms).tolist() == [0, 0, 1, 3, 3]


def test_draw_never_picks_a_filtered_code():
    probs = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    for u in (0.0, 0.5, 1.0 - 1e-7, 1.0):
        assert draw(probs, torch.tensor([u])).item() == 1


def test_sampled_support_is_restricted_by_top_k_and_top_p():
    probs = filter_logits(LOGITS.expand(4000, -1), top_k=3, top_p=0.85)
    codes = draw(probs, torch.rand(4000, generator=torch.Generator().manual_seed(0)))
    assert set(codes.tolist()) == {0, 1, 2}


def test_piece_uniforms_depend_only_on_each_seed():
    together = piece_uniforms([3, 4], 10)
    assert torch.equal(together[1], piece_uniforms([4], 10)[0])
    assert not torch.equal(together[0], together[1])
