"""The counter-based per-image draws (``aprkit.corruptions._random.ItemKeys``): the hash against an independent
NumPy implementation, invariance to batch, slicing, shape and threads, and statistics of every draw type."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import natural_images

from aprkit.corruptions import corrupt
from aprkit.corruptions._random import ItemKeys, item_seeds, mix64_, normal, poisson, randint, uniform, words

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
_GOLDEN, _C1, _C2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _keys(n: int, seed: int = 0) -> torch.Tensor:
    return item_seeds(seed, "snow", 3, "cifar", torch.arange(n))  # any valid key parts


# ----------------------------------------------------------------------------- the hash, independently
def _np_mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
        return z ^ (z >> np.uint64(31))


def _np_words(key: int, call: int, count: int, lane: int = 0) -> np.ndarray:
    """SplitMix64 from the stream of (key, call, lane), in NumPy uint64 (logical shifts, wrapping products)."""
    with np.errstate(over="ignore"):
        c = _np_mix(np.uint64((((call << 32) | lane) + 1) * _GOLDEN % 2**64))
        stream = _np_mix(np.uint64(key) + c)
        return _np_mix(stream + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(_GOLDEN))


def test_mix64_is_splitmix64_finaliser() -> None:
    z = np.array([0, 1, 2**63, 2**64 - 1, 0x0123456789ABCDEF], dtype=np.uint64)
    assert np.array_equal(mix64_(torch.from_numpy(z.view(np.int64).copy())).numpy().view(np.uint64), _np_mix(z))


def test_words_match_numpy_reference() -> None:
    keys = _keys(3)
    ik = ItemKeys(keys)
    ik.next_call()
    ik.next_call()
    ours = words(ik.streams(2, lane=5), 7).numpy().view(np.uint64)
    for i, k in enumerate(keys.tolist()):
        assert np.array_equal(ours[i], _np_words(k, 2, 7, lane=5))


def test_uniform_float32_bits_match_numpy_reference() -> None:
    """Element j is the 32-bit half j % 2 (low first) of word j // 2; float32 takes its high 24 bits, float64 all
    32: (bits + 2^(b-1)) / 2^b, computed here in exact integer arithmetic."""
    keys = _keys(2)
    u32 = uniform((2, 5), 0.0, 1.0, ItemKeys(keys), CPU)
    u64 = uniform((2, 5), 0.0, 1.0, ItemKeys(keys), CPU, torch.float64)
    for i, k in enumerate(keys.tolist()):
        w = _np_words(k, 0, 3)
        halves = np.stack([w & np.uint64(0xFFFFFFFF), w >> np.uint64(32)], 1).reshape(-1)[:5].astype(np.int64)
        signed = np.where(halves >= 2**31, halves - 2**32, halves)
        assert np.array_equal(u64[i].numpy(), (signed + 2**31) / 2**32)
        assert np.array_equal(u32[i].numpy(), ((signed >> 8) + 2**23).astype(np.float32) / 2**24)


def test_item_seeds_match_numpy_reference() -> None:
    from aprkit._hash import stable_hash64

    idx = np.array([0, 1, 7, 2**40, 2**62], dtype=np.uint64)
    base = np.uint64(stable_hash64("aprkit.corruptions", 5, "fog", 2, "cifar") >> 1)
    with np.errstate(over="ignore"):
        want = (_np_mix(base + (idx + np.uint64(1)) * np.uint64(_GOLDEN)) >> np.uint64(1)).astype(np.int64)
    assert item_seeds(5, "fog", 2, "cifar", idx.astype(np.int64)).tolist() == want.tolist()


def test_pinned_values() -> None:
    # a change here changes every generated corruption: raise aprkit.corruptions.api.BASE_VERSION
    keys = item_seeds(0, "fog", 1, "cifar", [0, 1])
    assert uniform((2, 3), 0.0, 1.0, ItemKeys(keys), CPU).mul(2**24).long().tolist() == [
        [4902292, 12285571, 8834680], [2380207, 16445954, 13251451]]
    assert randint(-2, 2, (2, 4), ItemKeys(keys), CPU).tolist() == [[-1, 0, 0, 1], [-2, 1, 1, 1]]


# ----------------------------------------------------------------------------- invariance
def _draws(keys: ItemKeys) -> list[torch.Tensor]:
    """One draw of each kind; the image axis is 0 except for the ``batch_dim=1`` randint (``_BATCH_DIM``)."""
    n = len(keys)
    return [uniform((n, 3, 5, 4), -1.0, 2.0, keys, CPU), normal((n, 61), 0.5, 2.0, keys, CPU),
            uniform((n, 9), 0.0, 1.0, keys, CPU, torch.float64), randint(-3, 4, (2, n, 33), keys, CPU, batch_dim=1),
            randint(0, 10**6, (n, 8), keys, CPU), normal((n, 6), 0.0, 1.0, keys, CPU, torch.float64),
            poisson(torch.linspace(0, 40, 20).repeat(n, 1), keys)]


_BATCH_DIM = [0, 0, 0, 1, 0, 0, 0]


def test_draws_do_not_depend_on_batch_slicing_or_order() -> None:
    keys = _keys(12)
    whole = _draws(ItemKeys(keys))
    for a, b in ((0, 1), (3, 9), (11, 12)):  # a slice of the images
        for w, p, dim in zip(whole, _draws(ItemKeys(keys[a:b])), _BATCH_DIM, strict=True):
            assert torch.equal(p, w.narrow(dim, a, b - a))
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))  # other neighbours, other order
    for w, p, dim in zip(whole, _draws(ItemKeys(keys[perm])), _BATCH_DIM, strict=True):
        assert torch.equal(p, w.index_select(dim, perm))


def test_slices_keep_the_counter_and_shapes_give_prefixes() -> None:
    keys = _keys(6)
    ik = ItemKeys(keys)
    first = uniform((6, 10), 0.0, 1.0, ik, CPU)
    part = ik[2:5]  # after one draw: the slice continues from the second call
    second = uniform((6, 10), 0.0, 1.0, ik, CPU)
    assert not torch.equal(first, second)
    assert torch.equal(uniform((3, 10), 0.0, 1.0, part, CPU), second[2:5])
    # element j's value does not depend on how many elements the call draws
    assert torch.equal(uniform((6, 7), 0.0, 1.0, ItemKeys(keys), CPU), first[:, :7])
    assert torch.equal(uniform((6, 2, 5), 0.0, 1.0, ItemKeys(keys), CPU).flatten(1), first)


def test_draws_do_not_depend_on_the_thread_count() -> None:
    keys = _keys(40)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _draws(ItemKeys(keys)) + [normal((40, 3, 64, 64), 0.0, 1.0, ItemKeys(keys), CPU)]
        torch.set_num_threads(3)
        many = _draws(ItemKeys(keys)) + [normal((40, 3, 64, 64), 0.0, 1.0, ItemKeys(keys), CPU)]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, many, strict=True):
        assert torch.equal(a, b)


def test_keys_move_to_the_requested_device_and_errors() -> None:
    ik = ItemKeys([1, 2, 3], "cpu")
    assert ik.keys.dtype == torch.int64 and ik.device == CPU and len(ik) == 3
    with pytest.raises(TypeError, match="1-D integer"):
        ItemKeys([0.5])
    with pytest.raises(ValueError, match="3 per-image keys for a batch of 4"):
        uniform((4, 2), 0.0, 1.0, ik, CPU)
    with pytest.raises(ValueError, match="high - low <= 2"):
        randint(0, 2**40, (3,), ik, CPU)
    with pytest.raises(ValueError, match="rates up to 512"):
        poisson(torch.full((3, 2), 600.0), ik)
    with pytest.raises(ValueError, match="float32 or float64, got torch.float16"):  # could round up to high
        uniform((3, 2), 0.0, 1.0, ik, CPU, torch.float16)


def test_poisson_and_shot_noise_do_not_depend_on_the_other_rates_of_the_batch() -> None:
    """The rate split is fixed by ``max_rate`` (default 512), not by the batch's largest rate: a dark image gets
    the same counts alone and next to a bright one."""
    keys = _keys(2)
    rates = torch.stack([torch.linspace(0, 60, 50), torch.linspace(0, 3, 50)])
    for max_rate in (None, 60.0):
        both = poisson(rates, ItemKeys(keys), max_rate)
        assert torch.equal(poisson(rates[1:], ItemKeys(keys[1:]), max_rate), both[1:])
    with pytest.raises(ValueError, match="rates up to 60"):
        poisson(rates * 2, ItemKeys(keys), 60.0)
    x = natural_images(2, 32, seed=1).float() / 255
    x[1] *= 0.3  # a dark image: its largest rate is under half of c
    seeds = item_seeds(0, "shot_noise", 1, "cifar", [0, 1])
    assert torch.equal(corrupt(x[1:], "shot_noise", 1, seeds=seeds[1:])[0],
                       corrupt(x, "shot_noise", 1, seeds=seeds)[1])


def test_randint_with_a_low_outside_int32() -> None:
    keys = ItemKeys(_keys(3))
    for low in (2**40, -(2**31), 2**31 - 5):
        r = randint(low, low + 5, (3, 50), keys, CPU)
        assert int(r.min()) >= low and int(r.max()) < low + 5 and int(r.max()) - int(r.min()) == 4


@pytest.mark.parametrize("block_words", [7, 40, 1 << 16])
def test_eager_cpu_blocks_equal_the_whole_batch_torch_path(block_words: int, monkeypatch) -> None:
    """Eager CPU draws hash in NumPy, block by block (``_itemkeys.draw``); accelerators and compiled code hash the
    whole batch with torch ops: the same values, also for odd element counts, blocks of several rows, partial rows
    and the image axis elsewhere."""
    from aprkit.corruptions import _itemkeys

    keys = _keys(5)
    shapes = [(5, 3, 7, 9), (5, 2, 33), (5, 1), (5, 0)]

    def draws() -> list[torch.Tensor]:
        ik = ItemKeys(keys)
        out = [f(shape, ik) for shape in shapes for f in (
            lambda s, k: uniform(s, -1.0, 2.0, k, CPU), lambda s, k: uniform(s, 0.0, 1.0, k, CPU, torch.float64),
            lambda s, k: normal(s, 0.5, 2.0, k, CPU), lambda s, k: normal(s, 0.0, 1.0, k, CPU, torch.float64),
            lambda s, k: normal(s, 0.0, 1.0, k, CPU, torch.float16), lambda s, k: randint(-3, 4, s, k, CPU, torch.int8),
            lambda s, k: randint(0, 10**6, s, k, CPU))]
        return out + [randint(-2, 2, (2, 2, 5, 41), ik, CPU, torch.int8, batch_dim=2), mix64_(keys.clone()),
                      words(keys, 9)]

    monkeypatch.setattr(_itemkeys, "_BLOCK_WORDS", block_words)
    blocked = draws()
    monkeypatch.setattr(_itemkeys, "eager_cpu", lambda t: False)
    for a, b in zip(blocked, draws(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


# ----------------------------------------------------------------------------- statistics
def _chi2_ok(observed: torch.Tensor, expected: torch.Tensor) -> None:
    """Pearson's statistic within 6 standard deviations of its mean (df = bins - 1)."""
    stat = float(((observed.double() - expected) ** 2 / expected).sum())
    df = observed.numel() - 1
    assert abs(stat - df) < 6 * math.sqrt(2 * df), (stat, df)


def test_uniform_moments_and_bit_histograms() -> None:
    u = uniform((500, 4096), 0.0, 1.0, ItemKeys(_keys(500)), CPU).double().flatten()
    n = u.numel()
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(float(u.var()) - 1 / 12) < 5 * math.sqrt((1 / 80 - 1 / 144) / n)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    k = (u * 2**24).long()
    for byte in (k >> 16, (k >> 8) & 255, k & 255):  # high, middle and low bits of the 24
        _chi2_ok(torch.bincount(byte, minlength=256), torch.full((256,), n / 256, dtype=torch.float64))
    pairs = (k[0::2] >> 20) * 16 + (k[1::2] >> 20)  # consecutive elements (the two halves of one word) jointly
    _chi2_ok(torch.bincount(pairs, minlength=256), torch.full((256,), n / 2 / 256, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_moments_and_quantiles(dtype: torch.dtype) -> None:
    z = normal((400, 5000), 0.0, 1.0, ItemKeys(_keys(400, seed=1)), CPU, dtype).double().flatten()
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((z**3).mean())) < 5 * math.sqrt(15 / n)
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / n)
    edges = torch.tensor([-math.inf, -2.5, -1.5, -0.7, -0.2, 0.0, 0.3, 1.0, 2.0, 3.0, math.inf], dtype=torch.float64)
    cdf = 0.5 * (1 + torch.special.erf(edges / math.sqrt(2)))
    observed = torch.bucketize(z, edges[1:-1]).bincount(minlength=10)
    _chi2_ok(observed, n * (cdf[1:] - cdf[:-1]))
    assert float(z.abs().max()) < 6.2  # the cut tail (5.42 in float32)


@pytest.mark.parametrize("low,high", [(-3, 3), (0, 5), (-7, 993)])
def test_randint_range_and_histogram(low: int, high: int) -> None:
    r = randint(low, high, (300, 4000), ItemKeys(_keys(300, seed=2)), CPU).flatten()
    assert int(r.min()) == low and int(r.max()) == high - 1
    _chi2_ok(torch.bincount(r - low, minlength=high - low),
             torch.full((high - low,), r.numel() / (high - low), dtype=torch.float64))


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 4.0, 9.99, 60.0, 64.0, 300.0])
def test_poisson_matches_its_pmf(lam: float) -> None:
    """Rates split into table levels (none below 1, two above 256) and an inverted remainder: mean, variance and
    the pmf of the counts."""
    n = 200_000
    k = poisson(torch.full((100, n // 100), lam), ItemKeys(_keys(100, seed=3))).double().flatten()
    assert torch.equal(k, k.round()) and float(k.min()) >= 0
    if lam == 0.0:
        assert float(k.max()) == 0.0
        return
    assert abs(float(k.mean()) - lam) < 5 * math.sqrt(lam / n)
    assert abs(float(k.var()) - lam) < 5 * lam * math.sqrt(2 / n) + 5 * math.sqrt(lam / n)
    support = torch.arange(int(lam + 8 * math.sqrt(lam) + 10), dtype=torch.float64)
    pmf = torch.exp(support * math.log(lam) - lam - torch.lgamma(support + 1))
    keep = pmf * n >= 20  # bins with enough expected counts; the rest pooled
    observed = torch.bincount(k.long(), minlength=support.numel())[:support.numel()].double()
    obs = torch.cat([observed[keep], (n - observed[keep].sum()).reshape(1)])
    exp = torch.cat([n * pmf[keep], (n - n * pmf[keep].sum()).reshape(1)])
    _chi2_ok(obs, exp)


def test_poisson_of_mixed_rates_keeps_the_shape_and_dtype() -> None:
    rate = torch.tensor([[0.0, 2.0, 15.0], [50.0, 0.5, 9.0]], dtype=torch.float64).repeat(1, 1000).reshape(2, 3, 1000)
    k = poisson(rate, ItemKeys(_keys(2)))
    assert k.shape == rate.shape and k.dtype == rate.dtype
    assert torch.allclose(k.mean(-1), rate.mean(-1), rtol=0.1, atol=0.05)


# ----------------------------------------------------------------------------- independence
def _max_abs_corr(rows: torch.Tensor) -> float:
    c = torch.corrcoef(rows.double())
    return float((c - torch.eye(c.shape[0], dtype=c.dtype)).abs().max())


def test_independence_across_images_calls_and_lanes() -> None:
    m = 8192
    bound = 6 / math.sqrt(m)  # max over ~2000 pairs of |r| with sd 1/sqrt(m): below ~4 sd
    consecutive = ItemKeys(torch.arange(64))  # raw keys 0..63: the stream mix must decorrelate them
    assert _max_abs_corr(uniform((64, m), 0.0, 1.0, consecutive, CPU)) < bound
    ik = ItemKeys(_keys(8))
    calls = torch.cat([normal((8, m), 0.0, 1.0, ik, CPU) for _ in range(8)])  # 8 calls x 8 images
    assert ik.counter == 8 and _max_abs_corr(calls) < bound
    lanes = torch.stack([words(ItemKeys(torch.tensor([7])).streams(0, lane), m)[0] for lane in range(16)])
    assert _max_abs_corr((lanes >> 40).double()) < bound
    # avalanche: words of streams one key apart differ in half their bits
    a, b = (words(ItemKeys(torch.tensor([k])).streams(0), m)[0].numpy().view(np.uint64) for k in (1000, 1001))
    flips = np.unpackbits((a ^ b).view(np.uint8)).mean() * 64
    assert abs(flips - 32) < 0.2


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_seeded_corruptions_match_generator_statistics(name: str, dtype: torch.dtype) -> None:
    """Per-image keys draw from the same distributions as a torch generator: the changes they make to the same
    images agree in mean, mean absolute value and spread (shot noise on float input: table levels vs NumPy)."""
    x = natural_images(64, 32, seed=7)
    x = x if dtype == torch.uint8 else x.float() / 255
    seeded = corrupt(x, name, 3, "cifar", seeds=item_seeds(0, name, 3, "cifar", torch.arange(64))).double()
    ref = corrupt(x, name, 3, "cifar", torch.Generator().manual_seed(0)).double()
    d_seeded, d_ref = seeded - x.double(), ref - x.double()
    scale = float(d_ref.abs().mean())
    assert abs(float(d_seeded.mean() - d_ref.mean())) < 0.03 * scale
    assert abs(float(d_seeded.abs().mean()) / scale - 1) < 0.03
    assert abs(float(d_seeded.std() / d_ref.std()) - 1) < 0.03
