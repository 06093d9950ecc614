"""Training batches: mini-batches of whole groups, token-budget micro-batches, response log-probs."""

from __future__ import annotations

import itertools

import torch

from dapo_rl.batch import TrainSample, collate, plan_micro_batches, sequence_logprobs, split_by_groups


def _samples(seed: int = 0, n_groups: int = 3, g: int = 2, vocab: int = 30) -> list[TrainSample]:
    rng = torch.Generator().manual_seed(seed)
    out = []
    for gi in range(n_groups):
        prompt = torch.randint(
            3, vocab, (int(torch.randint(2, 6, (1,), generator=rng)),), generator=rng
        ).tolist()
        for _ in range(g):
            n = int(torch.randint(1, 7, (1,), generator=rng))
            out.append(TrainSample(prompt, torch.randint(3, vocab, (n,), generator=rng).tolist(), 0.5, gi))
    return out


def test_split_by_groups_never_splits_a_group() -> None:
    samples = _samples(n_groups=5, g=3)
    mbs = split_by_groups(samples, 2)
    assert [len(m) for m in mbs] == [6, 6, 3]
    for mb in mbs:
        groups = {s.group for s in mb}
        for gi in groups:
            assert sum(s.group == gi for s in samples) == sum(s.group == gi for s in mb)


def test_plan_micro_batches_respects_budget_and_covers_all() -> None:
    lengths = [5, 9, 2, 9, 4, 7, 1, 30]
    plan = plan_micro_batches(lengths, token_budget=18)
    flat = sorted(i for mb in plan for i in mb)
    assert flat == list(range(len(lengths)))
    for mb in plan:
        cost = len(mb) * max(lengths[i] for i in mb)
        assert cost <= 18 or len(mb) == 1  # only an over-long single sample may exceed
    assert [7] in plan  # the 30-token sample sits alone


def _padded(plan: list[list[int]], lengths: list[int]) -> int:
    return sum(len(mb) * max(lengths[i] for i in mb) for mb in plan)


def test_plan_micro_batches_pads_less_than_filling_to_the_budget() -> None:
    """Budget 12, sorted lengths 2 3 3 4 6 6: filling up to the budget gives [2 3 3] [4 6] [6]
    (27 padded tokens); the planner keeps three micro-batches but cuts [2 3 3] [4] [6 6] (25)."""
    lengths = [6, 3, 2, 6, 4, 3]
    plan = plan_micro_batches(lengths, token_budget=12)
    assert [sorted(lengths[i] for i in mb) for mb in plan] == [[2, 3, 3], [4], [6, 6]]
    assert _padded(plan, lengths) == 25


def _best_by_brute_force(lengths: list[int], budget: int) -> tuple[int, int]:
    """(micro-batches, padded tokens), the least over every way of cutting the sorted lengths."""
    s = sorted(lengths)
    best = None
    for mask in range(2 ** (len(s) - 1)):  # bit k set: a cut after sorted sample k
        cuts = [0] + [k + 1 for k in range(len(s) - 1) if mask >> k & 1] + [len(s)]
        runs = [s[a:b] for a, b in itertools.pairwise(cuts)]
        if all(len(r) * r[-1] <= budget or len(r) == 1 for r in runs):
            cost = (len(runs), sum(len(r) * r[-1] for r in runs))
            best = cost if best is None or cost < best else best
    return best


def test_plan_micro_batches_is_the_fewest_micro_batches_then_least_padding() -> None:
    rng = torch.Generator().manual_seed(3)
    for _ in range(60):
        n = int(torch.randint(1, 10, (1,), generator=rng))
        lengths = torch.randint(1, 12, (n,), generator=rng).tolist()
        budget = int(torch.randint(4, 30, (1,), generator=rng))
        plan = plan_micro_batches(lengths, budget)
        assert sorted(i for mb in plan for i in mb) == list(range(n))
        assert all(len(mb) * max(lengths[i] for i in mb) <= budget or len(mb) == 1 for mb in plan)
        assert (len(plan), _padded(plan, lengths)) == _best_by_brute_force(lengths, budget)


def test_sequence_logprobs_match_full_forward() -> None:
    from tests.helpers_model import make_tiny_model_and_tokenizer

    model, _ = make_tiny_model_and_tokenizer(seed=1)
    model.eval()
    vocab = model.config.vocab_size
    samples = _samples(seed=2, vocab=vocab)
    samples[1].loss_mask = False
    mb = collate(samples, [0, 1, 2, 3], pad_id=0, device=torch.device("cpu"))
    temperature = 0.7
    logp, ent = sequence_logprobs(model, mb, temperature, with_entropy=True, chunk_tokens=3)
    assert logp.shape == mb.response_ids.shape
    for row, i in enumerate(mb.index):
        s = samples[i]
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float() / temperature
        lsm = torch.log_softmax(logits, -1)
        p0 = len(s.prompt_ids)
        for t, tok_id in enumerate(s.response_ids):
            expected = lsm[p0 - 1 + t, tok_id]
            assert torch.allclose(logp[row, t].detach(), expected, atol=1e-5)
            probs = lsm[p0 - 1 + t].exp()
            assert torch.allclose(ent[row, t].detach(), -(probs * lsm[p0 - 1 + t]).sum(), atol=1e-5)
        assert torch.all(logp[row, len(s.response_ids) :] == 0)
    assert mb.response_mask[1].sum() == 0  # masked sample (overlong filtering)
    assert mb.response_mask[0].sum() == len(samples[0].response_ids)


def test_split_by_global_positions_gives_every_rank_the_same_minibatches() -> None:
    # this rank holds groups at positions 1 and 4 of a 5-group step; 2 groups per update
    samples = [s for s in _samples(n_groups=2, g=2)]
    for s in samples:
        s.group = 1 if s.group == 0 else 4
    mbs = split_by_groups(samples, 2, total_groups=5)
    assert [len(m) for m in mbs] == [2, 0, 2]  # positions {0,1}, {2,3}, {4}
    assert {s.group for s in mbs[0]} == {1} and {s.group for s in mbs[2]} == {4}
