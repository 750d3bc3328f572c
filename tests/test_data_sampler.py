import numpy as np
import pytest

from usam.data.sampler import DurationBucketSampler, FixedSizeBatchSampler, padding_fraction


@pytest.fixture
def durations():
    return np.random.default_rng(0).uniform(1.0, 15.0, 1000)


def flat(batches):
    return [i for b in batches for i in b]


def test_deterministic_per_seed_and_epoch(durations):
    a = DurationBucketSampler(durations, 120, seed=5, num_replicas=1, rank=0)
    b = DurationBucketSampler(durations, 120, seed=5, num_replicas=1, rank=0)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != first
    c = DurationBucketSampler(durations, 120, seed=6, num_replicas=1, rank=0)
    assert list(c) != first


@pytest.mark.parametrize("max_samples", [None, 7])
def test_caps_respected_and_every_index_once(durations, max_samples):
    s = DurationBucketSampler(durations, 60, max_samples=max_samples, seed=1, num_replicas=1, rank=0)
    batches = list(s)
    assert sorted(flat(batches)) == list(range(len(durations)))
    for b in batches:
        assert len(b) * durations[b].max() <= 60 + 1e-9
        assert max_samples is None or len(b) <= max_samples
    assert len(s) == len(batches)


def test_clip_longer_than_cap_gets_its_own_batch():
    d = [1.0, 1.0, 50.0, 1.0]
    batches = list(DurationBucketSampler(d, 10, seed=0, num_replicas=1, rank=0))
    assert [2] in batches and sorted(flat(batches)) == [0, 1, 2, 3]


@pytest.mark.parametrize("sampler_kind", ["bucket", "fixed"])
@pytest.mark.parametrize("replicas", [2, 3, 7])
def test_rank_shards_disjoint_covering_equal(durations, sampler_kind, replicas):
    def make(rank, drop_last=False):
        if sampler_kind == "bucket":
            return DurationBucketSampler(durations, 120, seed=2, drop_last=drop_last, num_replicas=replicas, rank=rank)
        return FixedSizeBatchSampler(len(durations), 13, seed=2, drop_last=drop_last, num_replicas=replicas, rank=rank)

    shards = [list(make(r)) for r in range(replicas)]
    assert len({len(s) for s in shards}) == 1
    everything = [i for s in shards for i in flat(s)]
    assert sorted(everything) == list(range(len(durations)))  # disjoint and covering: no drop, no repeat
    dropped = [list(make(r, drop_last=True)) for r in range(replicas)]
    assert len({len(s) for s in dropped}) == 1
    kept = [i for s in dropped for i in flat(s)]
    assert len(kept) == len(set(kept))


def test_fewer_samples_than_ranks_still_equal_counts():
    shards = [list(DurationBucketSampler([1.0, 2.0], 100, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shards] == [1, 1, 1]


@pytest.mark.parametrize("sampler_kind", ["bucket", "fixed"])
def test_resume_equals_uninterrupted(durations, sampler_kind):
    def make():
        if sampler_kind == "bucket":
            return DurationBucketSampler(durations, 90, seed=3, num_replicas=2, rank=1)
        return FixedSizeBatchSampler(len(durations), 16, seed=3, num_replicas=2, rank=1)

    full = make()
    full.set_epoch(2)
    expected = list(full)

    run = make()
    run.set_epoch(2)
    consumed = []
    for batch in run:
        consumed.append(batch)
        run.advance()
        if len(consumed) == 5:
            break
    state = run.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == 5

    restarted = make()
    restarted.load_state_dict(state)
    restarted.set_epoch(2)  # the training loop calls it again: same epoch, resume position kept
    assert len(restarted) == len(expected) - 5
    rest = list(restarted)
    assert consumed + rest == expected
    restarted.set_epoch(3)
    assert len(list(restarted)) > 0 and restarted.state_dict()["batches_done"] == 0

    other = FixedSizeBatchSampler(10, 2, seed=3, num_replicas=1, rank=0)
    with pytest.raises(ValueError):
        other.load_state_dict(state)


def test_bucketing_pads_far_less_than_fixed_batches():
    d = np.random.default_rng(1).uniform(1.0, 15.0, 2000)
    bucket = list(DurationBucketSampler(d, 120, seed=0, num_replicas=1, rank=0))
    fixed = list(FixedSizeBatchSampler(len(d), round(len(d) / len(bucket)), seed=0, num_replicas=1, rank=0))
    p_bucket, p_fixed = padding_fraction(d, bucket), padding_fraction(d, fixed)
    assert p_bucket < 0.05 and p_fixed > 0.3 and p_bucket < p_fixed / 5


def test_padding_fraction_exact():
    assert padding_fraction([1.0, 3.0, 2.0, 2.0], [[0, 1], [2, 3]]) == pytest.approx(2.0 / 10.0)


def test_unknown_durations_rejected():
    with pytest.raises(ValueError, match="unknown"):
        DurationBucketSampler([1.0, None], 10, num_replicas=1, rank=0)


def test_lazy_package_exports():
    import usam.data

    assert usam.data.DurationBucketSampler is DurationBucketSampler and usam.data.SAMPLE_RATE == 16000
    with pytest.raises(AttributeError):
        usam.data.no_such_name


def test_a_token_cap_evens_out_the_tokens_of_micro_batches(durations):
    """Answers of very different lengths (a long caption against a class label) on clips of the same length:
    capped by audio seconds alone, micro-batches differ several-fold in padded tokens; capped in tokens, none
    exceeds the cap and they hold about the same. Every index still comes once, deterministically."""
    rng = np.random.default_rng(1)
    lengths = (durations * 10).astype(int) + np.where(rng.random(len(durations)) < 0.3, 300, 5)

    def padded(batches):
        return np.array([len(b) * lengths[b].max() for b in batches])

    seconds = list(DurationBucketSampler(durations, 120, max_samples=64, seed=1, num_replicas=1, rank=0))
    capped = DurationBucketSampler(durations, 120, max_samples=64, seed=1, num_replicas=1, rank=0,
                                   lengths=lengths, max_tokens=2048)
    batches = list(capped)
    assert sorted(flat(batches)) == list(range(len(durations)))
    assert padded(batches).max() <= 2048 and all(len(b) * durations[b].max() <= 120 for b in batches)
    spread = lambda p: p.std() / p.mean()  # noqa: E731
    assert spread(padded(batches)) < 0.5 * spread(padded(seconds))
    again = DurationBucketSampler(durations, 120, max_samples=64, seed=1, num_replicas=1, rank=0,
                                  lengths=lengths, max_tokens=2048)
    assert list(again) == batches
    with pytest.raises(ValueError, match="max_tokens needs lengths"):
        DurationBucketSampler(durations, 120, max_tokens=100)
