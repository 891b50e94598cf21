"""The batched AugMix ops behind APR-S: the per-image parameter table, the two strategies (grouped on the
host, dense on devices) giving the same numbers, one host->device copy per batch, and a core that traces
into one graph (no host sync, no data-dependent shapes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from aprkit.augment import ALL_OPS, APRSP, APRPair, APRSingleBatch
from aprkit.augment.ops import TABLE_COLS, apply_ops, op_table, sample_op_params, use_dense
from aprkit.augment.single import apr_single_core, param_table
from conftest import natural_images


def _params(n: int, op: int | torch.Tensor, seed: int = 0, severity: float = 3.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ops = torch.full((n,), op) if isinstance(op, int) else op
    level = 0.1 + (severity - 0.1) * torch.rand(n, generator=g, dtype=torch.float64)
    return {"op": ops, "level": level, "negate": torch.rand(n, generator=g) > 0.5}


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("ops", [None, ALL_OPS])
def test_strategies_give_the_same_numbers(dtype, ops):
    x8 = natural_images(24, 16, seed=2)
    x = x8 if dtype == torch.uint8 else x8.float() / 255
    sb = APRSingleBatch(p=0.7, ops=ops, seed=1)
    params = sb.generate_parameters(x.shape)
    grouped = apr_single_core(x, params, sb.ops, strategy="grouped")
    dense = apr_single_core(x, params, sb.ops, strategy="dense")
    assert dense.dtype == dtype and dense.shape == x.shape
    torch.testing.assert_close(dense, grouped, atol=1e-6, rtol=0)  # each image depends only on its own row
    torch.testing.assert_close(sb.apply(x, params), grouped, atol=0, rtol=0)  # "auto" groups on the CPU


def test_dense_gradients_are_finite():
    x = (natural_images(8, 8, seed=10).float() / 255).requires_grad_(True)
    sb = APRSingleBatch(p=1.0, ops=ALL_OPS, seed=3)
    apr_single_core(x, sb.generate_parameters(x.shape), sb.ops, strategy="dense").square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_constants_first_built_in_inference_mode_serve_autograd_later():
    """The cached tables and grid are ordinary tensors even when the first call ran under inference mode: a later
    call that autograd records (parameters that need gradients) can save them for backward."""
    names = ("rotate", "shear_x", "translate_y", "posterize")
    params = sample_op_params(3, len(names), 3.0, torch.Generator().manual_seed(4))
    x = torch.rand(3, 3, 13, 11) * 255
    with torch.inference_mode():
        apply_ops(x, names, params)
    y = x.clone().requires_grad_()
    apply_ops(y, names, params).sum().backward()
    assert torch.isfinite(y.grad).all()
    from aprkit.augment.ops import _constants
    from aprkit.augment.warp import _base_grid

    assert not _base_grid(13, 11, x.device, x.dtype).is_inference()
    assert not _constants(names, 13, 11, x.device)["coef"].is_inference()


@pytest.mark.parametrize("name", ALL_OPS)
def test_every_op_alone_and_mixed(name):
    x = natural_images(6, 12, seed=3).float()
    k = ALL_OPS.index(name)
    p = _params(6, k, seed=k)
    torch.testing.assert_close(apply_ops(x, ALL_OPS, p, "dense"), apply_ops(x, ALL_OPS, p, "grouped"), atol=1e-4, rtol=0)
    mixed = _params(6, torch.tensor([k, (k + 1) % 13, k, (k + 5) % 13, 0, k]), seed=k)
    out = apply_ops(x, ALL_OPS, mixed, "dense")
    torch.testing.assert_close(out, apply_ops(x, ALL_OPS, mixed, "grouped"), atol=1e-4, rtol=0)
    for i in range(6):  # batched == per image
        one = {key: v[i:i + 1] for key, v in mixed.items()}
        torch.testing.assert_close(apply_ops(x[i:i + 1], ALL_OPS, one, "dense")[0], out[i], atol=1e-4, rtol=0)


def _pixel_map(name: str, level: float, negate: bool, h: int, w: int) -> np.ndarray:
    """The inverse map output pixel -> input pixel (3x3, PIL's convention), written out per op."""
    sign = -1.0 if negate else 1.0
    m = np.eye(3)
    if name == "rotate":
        a = math.radians(sign * int(level * 30 / 10))
        c, s = math.cos(a), math.sin(a)
        cx, cy = w / 2, h / 2
        m[:2] = [[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy]]
    elif name.startswith("shear"):
        m[(0, 1) if name == "shear_x" else (1, 0)] = sign * level * 0.3 / 10
    else:
        m[(0, 2) if name == "translate_x" else (1, 2)] = sign * int(level * (w if name == "translate_x" else h) / 3 / 10)
    return m


def test_op_table_columns_match_the_per_op_formulas():
    h, w = 12, 20  # not square: the normalisation of each axis matters
    names = ALL_OPS
    p = _params(len(names) * 4, torch.arange(len(names)).repeat(4), seed=5, severity=9.0)
    table = op_table(names, p, h, w)
    assert table.shape == (len(p["op"]), TABLE_COLS) and table.dtype == torch.float64
    to_norm = np.array([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]])
    for i, k in enumerate(p["op"].tolist()):
        name, level, neg = names[k], float(p["level"][i]), bool(p["negate"][i])
        geo = name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
        want = to_norm @ (_pixel_map(name, level, neg, h, w) if geo else np.eye(3)) @ np.linalg.inv(to_norm)
        np.testing.assert_allclose(table[i, :6].numpy(), want[:2].ravel(), atol=1e-12)
        arg = {"posterize": 2.0 ** (4 + int(level * 4 / 10)), "solarize": 256 - int(level * 256 / 10)}.get(
            name, level * 1.8 / 10 + 0.1 if name in ("color", "contrast", "brightness", "sharpness") else 1.0)
        assert table[i, 6].item() == arg and table[i, 7].item() == k and table[i, 8].item() == float(geo)


def test_translate_moves_pixels_exactly_with_black_fill():
    x = natural_images(2, 10, seed=4).float()
    level = torch.tensor([4.0, 4.0], dtype=torch.float64)  # int(4 * 10 / 3 / 10) = 1 pixel
    p = {"op": torch.tensor([0, 0]), "level": level, "negate": torch.tensor([False, True])}
    for strategy in ("grouped", "dense"):
        out = apply_ops(x, ("translate_x",), p, strategy)
        torch.testing.assert_close(out[0, ..., :-1], x[0, ..., 1:], atol=1e-3, rtol=0)  # out(p) = x(p + 1)
        torch.testing.assert_close(out[1, ..., 1:], x[1, ..., :-1], atol=1e-3, rtol=0)
        assert out[0, ..., -1].abs().max() < 1e-3 and out[1, ..., 0].abs().max() < 1e-3


def test_integer_colour_ops_equal_pil():
    x8 = natural_images(4, 16, seed=6)
    for name, fn in (("equalize", ImageOps.equalize), ("solarize", None), ("posterize", None)):
        p = _params(4, 0, seed=7)
        out = apply_ops(x8.float(), (name,), p).round().to(torch.uint8)
        for i in range(4):
            img = Image.fromarray(x8[i].permute(1, 2, 0).numpy())
            level = float(p["level"][i])
            want = (fn(img) if fn is not None else ImageOps.solarize(img, 256 - int(level * 256 / 10)) if name == "solarize"
                    else ImageOps.posterize(img, 4 - int(level * 4 / 10)))
            assert np.array_equal(out[i].permute(1, 2, 0).numpy(), np.asarray(want)), name


def test_bad_op_index_and_strategy():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="must index the 9 ops"):
        apply_ops(x, ALL_OPS[:9], _params(2, 9))
    with pytest.raises(ValueError, match="strategy must be one of"):
        use_dense(x, "fast")
    assert not use_dense(x) and use_dense(x, "dense") and use_dense(torch.zeros(1, device="meta"))


def test_host_params_cross_to_the_device_in_one_copy(monkeypatch):
    """The packed table is the only tensor moved between devices ("meta" stands in for an accelerator)."""
    sb = APRSingleBatch(p=0.5, seed=0)
    params = sb.generate_parameters((5, 3, 8, 8))
    crossings = []
    orig = torch.Tensor.to

    def spy(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        if out.device != self.device:
            crossings.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "to", spy)
    table = param_table(sb.ops, params, 8, 8, torch.float32, torch.device("meta"))
    assert table.device.type == "meta" and table.shape == (5, 2 * TABLE_COLS + 2)
    assert crossings == [(5, 2 * TABLE_COLS + 2)]


def test_dense_core_compiles_into_one_graph():
    torch._dynamo.reset()
    x = natural_images(4, 8, seed=8)
    sb = APRSingleBatch(p=0.6, ops=ALL_OPS, seed=2)
    params = sb.generate_parameters(x.shape)
    compiled = APRSingleBatch(p=0.6, ops=ALL_OPS, seed=2, compile_core={"backend": "eager"})  # fullgraph=True
    torch.testing.assert_close(compiled(x), apr_single_core(x, params, sb.ops), atol=0, rtol=0)
    with pytest.raises(TypeError, match="compile_core must be"):
        APRSingleBatch(compile_core="yes")
    torch._dynamo.reset()


@pytest.mark.parametrize("method", ["apr_p", "apr_p_only", "apr_sp"])
def test_device_augment_pair_equals_the_class_wrappers(method):
    from aprkit.train.config import load_config
    from aprkit.train.recipe import DeviceAugment

    cfg = load_config(None, [f"aug.method={method}", "model.name=small_cnn", "aug.pair_p=1.0"])
    aug = DeviceAugment(cfg, torch.device("cpu"), torch.Generator().manual_seed(3))
    x, y = natural_images(6, 8, seed=9).float() / 255, torch.arange(6)
    got = aug.pair(x, y)
    ref_cls = APRPair if method == "apr_p_only" else APRSP
    want = ref_cls(p=1.0, dims=cfg.aug.dims, generator=torch.Generator().manual_seed(3))(x, y)
    torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)
    assert torch.equal(got[1], want[1])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_an_enclosing_autocast_does_not_change_the_pixels(dtype):
    """Under ``torch.autocast`` the sampling grid's matmul (and sharpness's conv) ran in bfloat16: up to 251 grey
    levels off along warped edges. The op core switches autocast off: the same bits as without it."""
    x8 = torch.nn.functional.interpolate(natural_images(16, 8, seed=4).float(), size=32, mode="bilinear").round()
    x = x8.to(torch.uint8) if dtype == torch.uint8 else x8 / 255
    sb = APRSingleBatch(p=0.5, ops=ALL_OPS, seed=0)
    params = sb.generate_parameters(x.shape)
    geo = _params(16, torch.tensor([ALL_OPS.index(n) for n in ("rotate", "shear_x", "translate_y", "sharpness")] * 4))
    want = {s: apr_single_core(x, params, sb.ops, strategy=s) for s in ("grouped", "dense")}
    want_ops = apply_ops(x8, ALL_OPS, geo)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for s, ref in want.items():
            torch.testing.assert_close(apr_single_core(x, params, sb.ops, strategy=s), ref, atol=0, rtol=0)
        torch.testing.assert_close(sb.apply(x, params), want["grouped"], atol=0, rtol=0)
        torch.testing.assert_close(apply_ops(x8, ALL_OPS, geo), want_ops, atol=0, rtol=0)



@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_are_warped_in_float32(dtype):
    """A float16/bfloat16 batch was warped in its own dtype: the inside test's tolerance (eps x side) blackened up
    to 15 border columns of an identity warp at 224 px, and the CPU's half-precision grid_sample gave NaN and values
    far outside 0..255. The ops compute in float32 now and cast back."""
    from aprkit.augment.warp import warp_pixels

    x = torch.arange(224.0).repeat(1, 1, 224, 1)
    for mode in ("bilinear", "nearest"):
        out = warp_pixels(x.to(dtype), torch.eye(3)[None], mode)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), x.to(dtype).float(), atol=0, rtol=0)
    x8 = torch.nn.functional.interpolate(natural_images(8, 8, seed=5).float(), size=32, mode="bilinear").round()
    geo = _params(8, torch.tensor([ALL_OPS.index(n) for n in ("rotate", "shear_x", "translate_y", "posterize")] * 2))
    want = apply_ops(x8, ALL_OPS, geo).to(dtype)
    for strategy in ("grouped", "dense"):
        got = apply_ops(x8.to(dtype), ALL_OPS, geo, strategy)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want.float(), atol=0, rtol=0)

def test_sharpness_keeps_images_below_3x3_as_pil_does() -> None:
    """PIL's SMOOTH keeps border pixels, so a 2-pixel-tall image is unchanged; the tensor path crashed in conv2d."""
    from PIL import ImageEnhance

    x = natural_images(1, 8)[:, :, :2]
    img = Image.fromarray(x[0].permute(1, 2, 0).numpy())
    assert np.array_equal(np.asarray(ImageEnhance.Sharpness(img).enhance(1.7)), np.asarray(img))
    params = sample_op_params(1, 1, 3.0, torch.Generator().manual_seed(0))
    for strategy in ("grouped", "dense"):
        assert torch.equal(apply_ops(x.float(), ("sharpness",), params, strategy), x.float())


@pytest.mark.parametrize("off, expected", [(1e-5, 200), (-1e-5, 0)])
def test_a_sample_point_just_off_an_edge_is_black_as_in_pil(off, expected):
    """In float32 the inside test's error moved both edges one way: a point 1e-5 px above the top edge took the edge
    pixel where PIL gives black (20 of 150 rotations of a 224 px image differed; core tester). The points are tested
    in float64 now, whatever the image's dtype."""
    import numpy as np
    from PIL import Image

    from aprkit.augment.ops import DEFAULT_OPS, apply_ops

    img = np.full((32, 32, 3), 200, np.uint8)
    s = (0.5 - off) / 21.5  # output pixel (row 0, column 21) samples y_in = 0.5 - 21.5 s = off
    pil = np.array(Image.fromarray(img).transform((32, 32), Image.AFFINE, (1, 0, 0, -s, 1, 0),
                                                  resample=Image.BILINEAR))
    assert pil[0, 21, 0] == expected
    draws = {"op": torch.tensor([DEFAULT_OPS.index("shear_y")]), "level": torch.tensor([s * 10 / 0.3],
             dtype=torch.float64), "negate": torch.tensor([True])}
    for dtype in (torch.float32, torch.float64):
        got = apply_ops(torch.from_numpy(img).permute(2, 0, 1)[None].to(dtype), DEFAULT_OPS, draws)
        assert got[0, 0, 0, 21].item() == expected, dtype
