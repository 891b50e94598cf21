"""kornia's own augmentation checks applied to the APR adapters (issue 14 items 1 and 4).

``p=0`` is the identity, ``p=1`` always applies, ``same_on_batch`` (also from a container), replay with
``params=``, the transform matrix moves masks / boxes / keypoints with the image, ``inverse`` undoes it,
and float16 / bfloat16 / float64 images keep their dtype.
"""

from __future__ import annotations

import pytest
import torch

K = pytest.importorskip("kornia.augmentation")

from aprkit.augment import APRPair, APRSingleBatch  # noqa: E402
from aprkit.augment.adapters import RandomAPRPair, RandomAPRSingle  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
KEYS = ["input", "mask", "bbox_xyxy", "keypoints"]


def _scene(b: int = 2, size: int = 64):
    """A bright square (columns 40..49, rows 20..29: centre x = 44.5) with its mask, box and centre keypoint."""
    x = torch.full((b, 3, size, size), 0.1)
    x[:, :, 20:30, 40:50] = 0.9
    mask = torch.zeros(b, 1, size, size)
    mask[:, :, 20:30, 40:50] = 1.0
    box = torch.tensor([[[40.0, 20.0, 49.0, 29.0]]]).repeat(b, 1, 1)
    kp = torch.tensor([[[44.5, 24.5]]]).repeat(b, 1, 1)
    return x, mask, box, kp


def _cx(t: torch.Tensor, above: float = 0.5) -> torch.Tensor:
    """Centre x of the pixels brighter than ``above`` (mean over channels), per image."""
    w = (t.float().mean(1) > above).float()
    return (w.sum(1) * torch.arange(t.shape[-1], dtype=torch.float32)).sum(-1) / w.sum((1, 2))


def test_translate_moves_mask_box_and_keypoint_with_the_image():
    """Item 1: the square moves 44.5 -> 39.5 (translate_x by 5 px) and so do its mask, box and keypoint."""
    x, mask, box, kp = _scene()
    aug = RandomAPRSingle(0.0, ops=["translate_x"], seed=0)
    seq = K.AugmentationSequential(aug, data_keys=KEYS)
    seq(x, mask, box, kp)
    params = seq._params
    params[0].data["level1"] = torch.full((2,), 2.5, dtype=torch.float64)  # int(2.5 * 64 / 3 / 10) = 5 px
    params[0].data["negate1"] = torch.tensor([False, True])  # left, right
    out, m, b, k = seq(x, mask, box, kp, params=params)
    assert _cx(out).tolist() == [39.5, 49.5]
    assert _cx(m).tolist() == [39.5, 49.5]
    assert k[:, 0, 0].tolist() == [39.5, 49.5] and k[:, 0, 1].tolist() == [24.5, 24.5]
    assert b[:, 0].tolist() == [[35.0, 20.0, 44.0, 29.0], [45.0, 20.0, 54.0, 29.0]]
    want = torch.tensor([[[1.0, 0, -5], [0, 1, 0], [0, 0, 1]], [[1.0, 0, 5], [0, 1, 0], [0, 0, 1]]])
    torch.testing.assert_close(aug.transform_matrix, want)


@pytest.mark.parametrize("op", ["rotate", "shear_x", "shear_y", "translate_y"])
def test_mask_follows_the_phase_view_and_inverse_restores(op):
    x, mask, box, kp = _scene(4)
    aug = RandomAPRSingle(1.0, ops=[op, "autocontrast"], severity=6, seed=3)
    seq = K.AugmentationSequential(aug, data_keys=KEYS)
    out, m, b, k = seq(x, mask, box, kp)
    mat = aug.transform_matrix
    assert mat.shape == (4, 3, 3)
    # the warped mask is the mask moved by the matrix, and equals where the (recombined) square went
    from aprkit.augment.warp import warp_pixels
    torch.testing.assert_close(m, warp_pixels(mask, mat.double(), "nearest").float())
    moved_kp = (mat[:, :2, :2] @ kp.transpose(1, 2) + mat[:, :2, 2:]).transpose(1, 2)
    torch.testing.assert_close(k, moved_kp)
    assert (_cx(out) - _cx(m)).abs().max() < 1.0  # the image's square sits where the mask went
    assert set(m.unique().tolist()) <= {0.0, 1.0}  # nearest
    inv_x, inv_m, inv_b, inv_k = seq.inverse(out, m, b, k)
    torch.testing.assert_close(inv_k, kp, atol=1e-4, rtol=0)
    inside = m.sum((1, 2, 3)) == mask.sum((1, 2, 3))  # masks not cut at the border come back (up to rounding)
    assert ((inv_m != mask).float().mean((1, 2, 3))[inside] < 0.01).all()


def test_p0_is_identity_and_p1_always_applies(images_f32):
    """Item 4: kornia's ``p`` is the probability of applying at all; APR's own is ``p_apr``."""
    for cls in (RandomAPRSingle, RandomAPRPair):
        aug = cls(1.0, p=0.0, seed=0)
        out = aug(images_f32)
        assert torch.equal(out, images_f32)
        if cls is RandomAPRSingle:
            assert torch.equal(aug.transform_matrix, torch.eye(3).expand(8, 3, 3))
        assert torch.equal(cls(1.0, p_batch=0.0, seed=0)(images_f32), images_f32)
        always = cls(1.0, p=1.0, seed=0)
        changed = ~torch.isclose(always(images_f32), images_f32, atol=1e-3).flatten(1).all(1)
        assert int(changed.sum()) >= 6  # (APR-P may pair an image with itself)
        assert bool((always._params["batch_prob"] > 0.5).all())
    half = RandomAPRSingle(1.0, p=0.5, seed=1)
    out = half(images_f32)
    applied = half._params["batch_prob"] > 0.5
    assert 0 < int(applied.sum()) < 8  # seeded gate: reproducible
    assert torch.equal(out[~applied], images_f32[~applied])
    assert torch.equal(RandomAPRSingle(1.0, p=0.5, seed=1)(images_f32), out)
    # p_apr is APRSingleBatch's p: same draws as the core class
    assert torch.equal(RandomAPRSingle(p_apr=0.5, seed=4)(images_f32), APRSingleBatch(p=0.5, seed=4)(images_f32))
    assert torch.equal(RandomAPRPair(p_apr=1.0, seed=2)(images_f32), APRPair(p=1.0, seed=2)(images_f32))
    assert RandomAPRSingle(0.3).p_apr == 0.3 and RandomAPRSingle(0.3).p == 1.0
    with pytest.raises(ValueError, match="^p must"):
        RandomAPRSingle(p=1.5)
    for cls in (RandomAPRSingle, RandomAPRPair):  # APR's own probability is named as the user wrote it
        with pytest.raises(ValueError, match="^p_apr must be in"):
            cls(p_apr=1.5)


def test_repr_shows_the_apr_settings_and_kornias():
    a, b = RandomAPRSingle(p_apr=0.1, severity=1, ops=["rotate"], p=0.5), RandomAPRSingle(p_apr=0.9, p=0.5)
    assert repr(a) != repr(b) and repr(a).startswith("RandomAPRSingle(p_apr=0.1, severity=1.0, ops=['rotate'],")
    assert "p=0.5, p_batch=1.0, same_on_batch=False" in repr(a)
    assert repr(RandomAPRPair(0.6)).startswith("RandomAPRPair(p_apr=0.6, dims='chw', per_sample=False")


def test_same_on_batch_and_container_override(images_f32):
    x = images_f32[:1].expand(6, -1, -1, -1).contiguous()
    out = RandomAPRSingle(1.0, same_on_batch=True, seed=0)(x)
    assert all(torch.equal(out[0], o) for o in out[1:])
    differ = RandomAPRSingle(1.0, seed=0)(x)
    assert not all(torch.equal(differ[0], o) for o in differ[1:])
    seq = K.ImageSequential(RandomAPRSingle(1.0, seed=0), same_on_batch=True)
    out2 = seq(x)
    assert all(torch.equal(out2[0], o) for o in out2[1:])
    pair = RandomAPRPair(1.0, per_sample=True, same_on_batch=True, seed=0)
    pair(images_f32)
    assert pair._params["mask"].unique().numel() == 1


def test_replay_with_params(images_f32):
    aug = RandomAPRSingle(0.7, p=0.8, seed=5)
    out = aug(images_f32)
    assert torch.equal(aug(images_f32, params=aug._params), out)
    seq = K.AugmentationSequential(K.RandomHorizontalFlip(), aug, data_keys=["input"])
    out = seq(images_f32)
    assert torch.equal(seq(images_f32, params=seq._params), out)
    with pytest.raises(ValueError, match="params lack"):
        aug(images_f32, params={"batch_prob": torch.ones(8)})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(images_f32, dtype):
    x = images_f32.to(dtype)
    x_, mask, box, kp = _scene(8, 32)
    seq = K.AugmentationSequential(RandomAPRSingle(1.0, seed=0), RandomAPRPair(1.0, clamp=True, seed=0),
                                   data_keys=["input", "mask"])
    out, m = seq(x, mask.to(dtype))
    assert out.dtype == dtype and out.shape == x.shape and torch.isfinite(out.float()).all()
    assert m.dtype == dtype
    ref = RandomAPRSingle(1.0, seed=0)(images_f32)
    assert (RandomAPRSingle(1.0, seed=0)(x).float() - ref).abs().mean() < 0.01


def test_autocast_leaves_images_and_masks_unchanged():
    """Kornia modules often run inside the model's autocast region: the sampling grids stay in float32 there."""
    x, mask, box, kp = _scene(8, 32)
    x = x + 0.05 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    aug = RandomAPRSingle(0.5, ops=["rotate", "shear_x", "translate_y"], severity=6, seed=0)
    seq = K.AugmentationSequential(aug, data_keys=["input", "mask"])
    out, m = seq(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ac, m_ac = seq(x, mask, params=seq._params)
    assert out_ac.dtype == out.dtype and torch.equal(out_ac, out) and torch.equal(m_ac, m)


def test_apr_s_draws_do_not_depend_on_the_batch_size(images_f32):
    """Item i of a batch of 4 and of 8 (same seed) gets the same APR-S result while kornia's gate draws nothing."""
    for kw in ({}, {"p": 1.0, "p_batch": 1.0}):
        small = RandomAPRSingle(0.5, seed=3, **kw)(images_f32[:4])
        assert torch.equal(small, RandomAPRSingle(0.5, seed=3, **kw)(images_f32)[:4])


@pytest.mark.parametrize("cls", [RandomAPRSingle, RandomAPRPair])
def test_module_apply_fn_reaches_the_core(cls, images_f32):
    """The adapters hold ``APRSingleBatch`` / ``APRPair`` as child modules, whose Kornia-style ``apply(x, params)``
    shadowed ``nn.Module.apply(fn)``: ``nn.Sequential(aug, conv).apply(fn)`` raised ``TypeError``; now ``fn`` visits
    the adapter, its core and the conv, and replay with ``params`` gives the same output."""
    aug = cls(1.0, seed=0)
    out = aug(images_f32)
    conv = torch.nn.Conv2d(3, 4, 3)
    net = torch.nn.Sequential(aug, conv)
    seen: list[torch.nn.Module] = []
    assert net.apply(seen.append) is net
    assert all(any(m is want for m in seen) for want in (aug, aug.core, conv, net))
    assert torch.equal(aug(images_f32, params=aug._params), out)


class _Gated(torch.utils.data.Dataset):
    """Kornia's apply/skip draw of the first call in each DataLoader worker, with the worker's id."""

    def __init__(self, aug) -> None:
        self.aug = aug

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        self.aug(torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
        return self.aug._params["batch_prob"].clone(), torch.utils.data.get_worker_info().id


@pytest.mark.parametrize("cls", [RandomAPRSingle, RandomAPRPair])
def test_seeded_gate_draws_differ_between_workers_from_the_first_call(cls):
    """Kornia's apply/skip draw comes from the seeded core generator, re-seeded per worker before that first draw
    (it drew the same gate in every worker on the first call)."""
    loader = torch.utils.data.DataLoader(_Gated(cls(seed=0, p=0.5)), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork",
                                         generator=torch.Generator().manual_seed(0))
    gates = {int(w): g for g, w in loader}
    assert set(gates) == {0, 1} and not torch.equal(gates[0], gates[1])


@pytest.mark.parametrize("same_on_frame", [True, False])
def test_apr_p_in_a_video_container_pairs_frame_t_with_frame_t(same_on_frame):
    """VideoSequential repeats a per-video draw over the frames: its video indices were read as frame indices (video 0
    took frame 2 of video 0 as its partner). Frame t now takes frame t of the partner video, as kornia's own mixes."""
    kaug = pytest.importorskip("kornia.augmentation")
    x = torch.rand(3, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    aug = RandomAPRPair(p_apr=1.0, seed=3)
    out = kaug.VideoSequential(aug, data_format="BTCHW", same_on_frame=same_on_frame)(x).reshape(12, 3, 8, 8)
    frames = x.reshape(12, 3, 8, 8)
    drawn = aug._params["perm"]
    perm = drawn * 4 + torch.arange(12) % 4 if same_on_frame else drawn
    amp = lambda t: torch.fft.fftn(t, dim=(-3, -2, -1)).abs()  # noqa: E731
    torch.testing.assert_close(amp(out), amp(frames[perm]), atol=1e-3, rtol=1e-3)
    if same_on_frame:
        with pytest.raises(ValueError, match="needs same_on_batch=False"):
            kaug.VideoSequential(RandomAPRPair(p_apr=1.0, same_on_batch=True), data_format="BTCHW")(x)


def test_a_shared_draw_over_as_many_frames_as_videos_is_refused_too():
    """With B == T a per-frame shared draw (same_on_frame=False, same_on_batch=True) looked like a per-video one."""
    kaug = pytest.importorskip("kornia.augmentation")
    x = torch.rand(3, 3, 3, 8, 8)
    with pytest.raises(ValueError, match="needs same_on_batch=False"):
        kaug.VideoSequential(RandomAPRPair(p_apr=1.0, same_on_batch=True), data_format="BTCHW",
                             same_on_frame=False)(x)


def test_p_apr_is_settable_and_checked_as_kornia_p():
    """``p_apr`` can be changed after construction (as kornia's own ``p``); a value outside [0, 1] is refused."""
    from aprkit.augment import APRSingle

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for cls in (RandomAPRPair, RandomAPRSingle):
        aug = cls(seed=0)
        aug.p_apr = 0.0
        assert aug.p_apr == 0.0 and aug.core.p == 0.0
        assert torch.equal(aug(x), x) if cls is RandomAPRPair else aug(x).shape == x.shape
        with pytest.raises(ValueError, match="p_apr must be in"):
            aug.p_apr = 1.5
    single = APRSingle(p=0.5)
    single.p = 0.25
    assert single.batch.p == 0.25
    with pytest.raises(ValueError, match="p must be in"):
        single.p = -0.1


def test_a_normalised_batch_is_recombined_as_it_comes_and_clamp_refuses_it():
    """APR-P on a normalised batch is the reference's ImageNet variant (it mixes after normalising), not an error; with
    clamp=True (results in [0, 1]) a normalised batch is refused, as by RandomAPRSingle."""
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    normalised = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    out = RandomAPRPair(p_apr=1.0, seed=0)(normalised)
    assert out.shape == x.shape and not torch.equal(out, normalised)
    for aug in (RandomAPRPair(p_apr=1.0, clamp=True, seed=0), RandomAPRSingle(p_apr=1.0, seed=0)):
        with pytest.raises(ValueError, match="normalised with a mean and std"):
            aug(normalised)


def test_a_batch_left_as_it_was_is_a_new_tensor_as_from_kornias_own_transforms():
    """The batch-level draw 'no' handed back the input itself: an in-place op after it changed the caller's batch."""
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for aug in (RandomAPRPair(p_apr=0.0, seed=0), K.AugmentationSequential(RandomAPRPair(p_apr=0.0, seed=0)),
                K.ColorJitter(0.1, p=0.0)):
        out = aug(x)
        assert out is not x and torch.equal(out, x)
