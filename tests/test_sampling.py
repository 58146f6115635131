import pytest
import torch

from bachsformer.sampling import draw, filter_logits, gumbel_noise, set_sampling_threads

PROBS = torch.tensor([[0.5, 0.25, 0.15, 0.1]])
LOGITS = torch.log(PROBS)


def support(logits: torch.Tensor) -> list[int]:
    return torch.nonzero(torch.isfinite(logits[0])).flatten().tolist()


def test_no_filter_keeps_the_distribution():
    assert torch.allclose(torch.softmax(filter_logits(LOGITS), -1), PROBS)


def test_top_k_keeps_the_k_likeliest():
    filtered = filter_logits(LOGITS, top_k=2)
    assert support(filtered) == [0, 1]
    assert torch.allclose(torch.softmax(filtered, -1), torch.tensor([[2 / 3, 1 / 3, 0.0, 0.0]]))


def test_top_p_keeps_the_smallest_set_holding_the_mass():
    assert support(filter_logits(LOGITS, top_p=0.7)) == [0, 1]
    assert support(filter_logits(LOGITS, top_p=0.76)) == [0, 1, 2]
    assert support(filter_logits(LOGITS, top_p=0.5)) == [0]
    assert support(filter_logits(LOGITS, top_p=0.1)) == [0]
    assert support(filter_logits(LOGITS, top_p=1.0)) == [0, 1, 2, 3]


def test_temperature_sharpens_and_flattens():
    cold = torch.softmax(filter_logits(LOGITS, temperature=0.5), -1)
    hot = torch.softmax(filter_logits(LOGITS, temperature=2.0), -1)
    assert cold[0, 0] > 0.5 > hot[0, 0]


def test_gumbel_draws_follow_the_distribution():
    noise = gumbel_noise([0], 20000, 4)[0]  # [20000, 4]
    codes = draw(LOGITS.expand(20000, -1), noise)
    frequencies = torch.bincount(codes, minlength=4) / 20000
    assert torch.allclose(frequencies, PROBS[0], atol=0.015)


def test_sampled_support_is_restricted_by_top_k_and_top_p():
    logits = filter_logits(LOGITS.expand(4000, -1), top_k=3, top_p=0.85)
    codes = draw(logits, gumbel_noise([1], 4000, 4)[0])
    assert set(codes.tolist()) == {0, 1, 2}
    logits = filter_logits(LOGITS.expand(4000, -1), top_k=3, top_p=0.8)
    assert set(draw(logits, gumbel_noise([1], 4000, 4)[0]).tolist()) == {0, 1}


def test_noise_depends_only_on_each_seed():
    together = gumbel_noise([3, 4], 10, 4)
    assert torch.equal(together[1], gumbel_noise([4], 10, 4)[0])
    assert not torch.equal(together[0], together[1])


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_sampling_runs_on_one_thread_unless_told_otherwise(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert set_sampling_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own choice of threads is kept
    assert set_sampling_threads() == 3 and torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a number: the default
    assert set_sampling_threads() == 1
    assert set_sampling_threads(2) == 2 and torch.get_num_threads() == 2  # asked for outright
    with pytest.raises(ValueError, match="threads"):
        set_sampling_threads(-1)
