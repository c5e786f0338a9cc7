"""ChoiceSampler: greedy, seeded, nucleus and penalised sampling of one choice's next token."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from broker.contracts import SamplingParams
from inference_worker.engines.sampling import ChoiceSampler

VOCAB = 64


def flat_logits(seed: int = 0) -> torch.Tensor:
    """Random logits close enough to uniform that any token may be drawn."""
    return torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed)) * 0.1


def draws(sampler: ChoiceSampler, logits: torch.Tensor, count: int = 40) -> list[int]:
    return [sampler.sample(logits) for _ in range(count)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_is_argmax(seed):
    logits = torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed))
    sampler = ChoiceSampler(SamplingParams(temperature=0.0), 0, VOCAB)
    assert sampler.sample(logits) == int(torch.argmax(logits))


def test_greedy_ignores_the_seed_and_top_p():
    logits = flat_logits()
    expected = int(torch.argmax(logits))
    for params in (SamplingParams(temperature=0.0, seed=1), SamplingParams(temperature=0.0, top_p=0.1, seed=2)):
        assert draws(ChoiceSampler(params, 3, VOCAB), logits, 5) == [expected] * 5


def test_same_seed_and_index_give_the_same_tokens():
    params = SamplingParams(temperature=1.0, seed=1234)
    logits = flat_logits()
    assert draws(ChoiceSampler(params, 0, VOCAB), logits) == draws(ChoiceSampler(params, 0, VOCAB), logits)


def test_same_seed_with_top_p_gives_the_same_tokens():
    params = SamplingParams(temperature=0.8, top_p=0.9, seed=99)
    logits = flat_logits()
    assert draws(ChoiceSampler(params, 1, VOCAB), logits) == draws(ChoiceSampler(params, 1, VOCAB), logits)


def test_seeded_draws_vary_within_one_stream():
    tokens = draws(ChoiceSampler(SamplingParams(temperature=1.0, seed=5), 0, VOCAB), flat_logits())
    assert len(set(tokens)) > 5, "a seed fixes the stream, it does not repeat one token"


def test_each_choice_of_a_seeded_request_has_its_own_stream():
    params = SamplingParams(temperature=1.0, seed=1234)
    logits = flat_logits()
    assert draws(ChoiceSampler(params, 0, VOCAB), logits) != draws(ChoiceSampler(params, 1, VOCAB), logits)


def test_different_seeds_give_different_tokens():
    logits = flat_logits()
    first = draws(ChoiceSampler(SamplingParams(temperature=1.0, seed=1), 0, VOCAB), logits)
    second = draws(ChoiceSampler(SamplingParams(temperature=1.0, seed=1000), 0, VOCAB), logits)
    assert first != second


def test_unseeded_requests_differ():
    logits = flat_logits()
    params = SamplingParams(temperature=1.0)
    assert draws(ChoiceSampler(params, 0, VOCAB), logits) != draws(ChoiceSampler(params, 0, VOCAB), logits)


@pytest.mark.parametrize("seed", [-1, -(2**63), 2**63 - 1])
def test_extreme_seeds_are_usable(seed):
    sampler = ChoiceSampler(SamplingParams(temperature=1.0, seed=seed), 7, VOCAB)
    assert 0 <= sampler.sample(flat_logits()) < VOCAB


@pytest.mark.parametrize("top_p", [0.0, 1e-6, 0.01])
def test_tiny_top_p_always_picks_the_most_likely_token(top_p):
    logits = flat_logits(3)  # nearly flat: without top_p almost any token could come out
    best = int(torch.argmax(logits))
    sampler = ChoiceSampler(SamplingParams(temperature=1.0, top_p=top_p, seed=0), 0, VOCAB)
    assert draws(sampler, logits, 100) == [best] * 100


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    sampler = ChoiceSampler(SamplingParams(temperature=1.0, top_p=0.7, seed=0), 0, 4)
    seen = Counter(draws(sampler, torch.log(probs), 400))
    # 0.5 < 0.7 so token 1 is needed too; 0.5 + 0.3 reaches 0.7, so tokens 2 and 3 are out.
    assert set(seen) == {0, 1}


def test_top_p_of_one_can_pick_any_token():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    sampler = ChoiceSampler(SamplingParams(temperature=1.0, top_p=1.0, seed=0), 0, 4)
    assert set(draws(sampler, torch.log(probs), 400)) == {0, 1, 2, 3}


def test_low_temperature_concentrates_on_the_best_token():
    logits = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    hot = Counter(draws(ChoiceSampler(SamplingParams(temperature=1.0, seed=0), 0, 4), logits, 400))
    cold = Counter(draws(ChoiceSampler(SamplingParams(temperature=0.05, seed=0), 0, 4), logits, 400))
    # At temperature 0.05 the best token has 99.7% of the mass; at 1.0 it has 40%.
    assert cold[0] >= 390
    assert 120 < hot[0] < 200


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    seen = Counter(draws(ChoiceSampler(SamplingParams(temperature=1.0, seed=42), 0, 3), logits, 2000))
    assert seen[0] > seen[1] > seen[2] > 0
    assert abs(seen[0] / 2000 - 0.7) < 0.05


# --- penalties ----------------------------------------------------------------------------------

LEADER, RUNNER_UP = 0, 1


def penalised(**params) -> ChoiceSampler:
    return ChoiceSampler(SamplingParams(temperature=0.0, **params), 0, 4)


LOGITS = torch.tensor([5.0, 4.5, 1.0, 0.0])


@pytest.mark.parametrize("params", [{"frequency_penalty": 1.0}, {"presence_penalty": 1.0}])
def test_penalty_moves_the_choice_away_from_a_generated_token(params):
    sampler = penalised(**params)
    assert sampler.sample(LOGITS) == LEADER
    sampler.observe(LEADER)
    assert sampler.sample(LOGITS) == RUNNER_UP


def test_frequency_penalty_grows_with_each_occurrence():
    sampler = penalised(frequency_penalty=0.3)
    sampler.observe(LEADER)
    assert sampler.sample(LOGITS) == LEADER  # 5.0 - 0.3 still beats 4.5
    sampler.observe(LEADER)
    assert sampler.sample(LOGITS) == RUNNER_UP  # 5.0 - 0.6 does not


def test_presence_penalty_is_paid_once():
    sampler = penalised(presence_penalty=0.3)
    for _ in range(5):
        sampler.observe(LEADER)
    assert sampler.sample(LOGITS) == LEADER  # 5.0 - 0.3, however often the token appeared


def test_negative_penalty_favours_repeating():
    sampler = penalised(frequency_penalty=-1.0)
    sampler.observe(RUNNER_UP)
    assert sampler.sample(LOGITS) == RUNNER_UP


def test_observing_without_penalties_changes_nothing():
    sampler = penalised()
    for _ in range(10):
        sampler.observe(LEADER)
    assert sampler.sample(LOGITS) == LEADER


def test_penalty_leaves_the_callers_logits_untouched():
    sampler = penalised(frequency_penalty=2.0)
    sampler.observe(LEADER)
    logits = LOGITS.clone()
    sampler.sample(logits)
    assert torch.equal(logits, LOGITS)


def test_observing_a_token_outside_the_vocabulary_is_ignored():
    sampler = penalised(frequency_penalty=1.0)
    sampler.observe(10_000)
    assert sampler.sample(LOGITS) == LEADER
