"""The internal transplant test (aprkit.eval.analyses.transplant) on small deterministic networks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import natural_images
from torch import nn

from aprkit import fourier
from aprkit.eval.analyses.phase_bias import sample_pairs
from aprkit.eval.analyses.transplant import layer_sweep, sample_disagreeing_pairs, transplant_test
from aprkit.eval.report import markdown_block
from aprkit.hidden import codes


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class SmallCNN(nn.Module):
    """stem -> two residual blocks (functional ReLUs) -> global average pool -> linear."""

    def __init__(self, c: int = 8, classes: int = 6) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(Block(c), Block(c))
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean(dim=(-2, -1)))


class TokenNet(nn.Module):
    """Patch tokens plus a class token; the head reads the class token only."""

    def __init__(self, d: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, d, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.mix = nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1) + t.mean(1, keepdim=True), t], 1)
        t = self.mix(t)
        return self.head(t[:, 0])


@torch.no_grad()
def calibrate_head(model: nn.Module, fc: nn.Linear, x: torch.Tensor) -> nn.Module:
    """Centre and scale the head's logits on ``x`` so a random network predicts several classes."""
    seen = []
    h = fc.register_forward_hook(lambda m, a, o: seen.append(a[0]))
    model(x)
    h.remove()
    w = torch.randn(fc.weight.shape, generator=torch.Generator().manual_seed(0))
    fc.weight.copy_(w / seen[0].std(0).clamp_min(1e-6))
    fc.bias.copy_(-(seen[0] @ fc.weight.T).mean(0))
    return model


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = natural_images(48, size=16, seed=3).float() / 255
    model = SmallCNN().eval()
    calibrate_head(model, model.fc, x)
    with torch.no_grad():
        assert model(x).argmax(1).unique().numel() >= 2  # pairs need two predicted classes
    return model, x


def _row(res: dict, code: str = "phase") -> dict:
    return next(r for r in res["rows"] if r["code"] == code)


def test_identity_swap_reproduces_predictions(setup) -> None:
    model, x = setup
    for site, layer, idx in (("output", "blocks.0", None), ("input", "blocks.1:relu", -1), ("output", "stem.0", None)):
        res = transplant_test(model, x, [layer], code=("phase", "sign"), site=site, call_index=idx, n_pairs=30)
        for r in res["rows"]:
            assert r["identity_agreement"] == 1.0, (layer, r["code"])
            assert r["identity_max_logit_diff"] < 1e-4
            assert "identity swap changed predictions" not in r["flags"]


def test_input_layer_phase_equals_pixel_swap(setup) -> None:
    """At the network's input, code='phase' (dims='hw') is exactly aprkit.fourier's pixel-level swap."""
    model, x = setup
    res = transplant_test(model, x, ["stem.0"], code="phase", site="input", dims="hw", n_pairs=40,
                          generator=torch.Generator().manual_seed(5), keep_predictions=True)
    a, b = torch.tensor(res["pairs_a"]), torch.tensor(res["pairs_b"])
    with torch.no_grad():
        pixel = model(fourier.swap_amplitude(x[a], x[b], dims="hw")).argmax(1)
    assert res["rows"][0]["predictions"] == pixel.tolist()
    clean = torch.tensor(res["clean_predictions"])
    assert _row(res)["follow_donor"] == pytest.approx(float((pixel == clean[a]).float().mean()))


def test_post_relu_sign_transplant_is_a_noop(setup) -> None:
    """Post-ReLU activations are non-negative, so their sign is +1 everywhere: sign(A) * |B| == B.

    The sign transplant after a ReLU is therefore inert: the prediction always follows B (the
    magnitude donor) and the row is flagged 'inert' - a trivial result, not evidence for a code.
    """
    model, x = setup
    res = transplant_test(model, x, ["stem.1"], code="sign", site="output", n_pairs=30)
    r = _row(res, "sign")
    assert r["negative_fraction"] == 0.0
    assert r["activation_change"] == 0.0
    assert r["follow_magnitude"] == 1.0 and r["follow_donor"] == 0.0
    assert any(f.startswith("inert") and "non-negative" in f for f in r["flags"])
    a = torch.rand(3, 4, 5, 5)
    b = torch.rand(3, 4, 5, 5)
    assert torch.equal(codes.transplant(a, b, "sign"), b)
    # the pre-activation (the ReLU's input) carries a real sign code
    pre = _row(transplant_test(model, x, ["stem.1"], code="sign", site="input", n_pairs=30), "sign")
    assert pre["activation_change"] > 0.1 and not any(f.startswith("inert") for f in pre["flags"])


def test_controls_dc_only_at_readout_and_deletion(setup) -> None:
    model, x = setup
    res = transplant_test(model, x, ["blocks.1"], code=("phase", "sign"), n_pairs=30,
                          labels=torch.zeros(48, dtype=torch.long))
    for r in res["rows"]:
        # the global average pool reads only the channel means: DC-only keeps every prediction
        assert r["dc_only_agreement"] == 1.0
        assert 0.0 <= r["deletion_agreement"] <= 1.0 and "deletion_accuracy" in r
        assert r["follow_donor"] + r["follow_magnitude"] + r["neither"] == pytest.approx(1.0) and r["neither"] >= 0
        assert 0.0 < r["magnitude_variation"] < 1.0
    # post-ReLU block output: the phase of each channel's DC term is 0, so the channel means (and the
    # pooled readout) stay B's: the phase transplant follows the magnitude donor
    assert _row(res, "phase")["follow_magnitude"] == 1.0


def test_tokens_keep_class_token() -> None:
    torch.manual_seed(1)
    model = TokenNet().eval()
    x = natural_images(32, size=16, seed=2).float() / 255
    calibrate_head(model, model.head, x)
    res = transplant_test(model, x, ["mix"], code=("phase", "sign"), site="input", n_pairs=20, num_prefix_tokens=1)
    for r in res["rows"]:
        assert r["kind"] == "tokens" and r["shape"] == [8, 4, 4]
        # the head reads the class token, which the transplant leaves as B's
        assert r["follow_magnitude"] == 1.0
        assert r["identity_agreement"] == 1.0
        assert r["prefix_tokens"] == "receiver"
        assert r["deletion_agreement"] == 1.0  # the controls leave the class token as it is
        assert any(f.startswith("prefix:") and "keeps B's" in f for f in r["flags"])  # said beside the rate
    # prefix_tokens="sign": the class token takes A's sign on B's absolute values, so the prediction can follow A
    signed = transplant_test(model, x, ["mix"], code=("phase", "sign"), site="input", n_pairs=400,
                             num_prefix_tokens=1, prefix_tokens="sign", keep_predictions=True)  # ~5.5 % follow A
    for r in signed["rows"]:
        assert r["prefix_tokens"] == "sign" and r["identity_agreement"] == 1.0
        assert r["follow_donor"] > 0.02 and r["follow_magnitude"] < 0.95  # the receiver mode's are 0 and 1
        assert r["deletion_agreement"] < 1.0  # deletion now reaches the class token: own sign, mean magnitude
        assert any(f.startswith("prefix:") and "the phase code too" in f for f in r["flags"])
    rows = {r["code"]: r for r in signed["rows"]}  # the head reads only the class token: both codes give its sign
    assert rows["phase"]["predictions"] == rows["sign"]["predictions"]
    with pytest.raises(ValueError, match="prefix_tokens must be one of"):
        transplant_test(model, x, ["mix"], n_pairs=5, prefix_tokens="donor")


def test_call_index_for_modules_called_twice() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.relu(self.conv2(self.relu(self.conv1(x)))).mean(dim=(-2, -1)))

    torch.manual_seed(4)
    model = Shared().eval()
    x = natural_images(24, size=8, seed=1).float() / 255
    calibrate_head(model, model.fc, x)
    with pytest.raises(ValueError, match="called 2 times per forward; pass call_index"):
        transplant_test(model, x, ["relu"], n_pairs=5)
    with pytest.raises(ValueError, match="out of range"):
        transplant_test(model, x, ["relu"], call_index=2, n_pairs=5)
    res = transplant_test(model, x, ["relu"], call_index=-1, site="input", n_pairs=10)
    assert res["rows"][0]["call_index"] == 1 and res["rows"][0]["identity_agreement"] == 1.0


def test_bad_input_errors(setup) -> None:
    model, x = setup
    with pytest.raises(ValueError, match=r"no layer named 'blocks\.O'.*did you mean"):
        transplant_test(model, x, ["blocks.O"])
    with pytest.raises(ValueError, match=r"not a feature map|feature map \(B, C, H, W\) or a token sequence"):
        transplant_test(model, x, ["fc"], n_pairs=5)
    with pytest.raises(ValueError, match="code must be"):
        transplant_test(model, x, ["blocks.0"], code="amplitude")
    with pytest.raises(ValueError, match="site must be"):
        transplant_test(model, x, ["blocks.0"], site="middle")
    with torch.no_grad():
        top = model(x).argmax(1)
    one_class = x[top == top[0]]
    with pytest.raises(ValueError, match="same clean prediction.*no valid pair"):
        transplant_test(model, one_class, ["blocks.0"])
    with pytest.raises(ValueError, match="no valid pair"):
        sample_disagreeing_pairs(torch.zeros(5, dtype=torch.long), 3)


def test_sample_disagreeing_pairs_differ_and_are_seeded() -> None:
    preds = torch.tensor([0, 0, 1, 2, 2, 1])
    a1, b1 = sample_disagreeing_pairs(preds, 50, torch.Generator().manual_seed(0))
    a2, b2 = sample_disagreeing_pairs(preds, 50, torch.Generator().manual_seed(0))
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and (preds[a1] != preds[b1]).all()


def test_disagreeing_pairs_weigh_pairs_where_phase_pairs_weigh_images() -> None:
    # 4 images of class 0, 1 of class 1: 8 differing ordered pairs, image 4 is `a` in half of them
    preds = torch.tensor([0, 0, 0, 0, 1])
    a, _ = sample_disagreeing_pairs(preds, 4000, torch.Generator().manual_seed(0))
    i, _ = sample_pairs(preds, 4000, generator=torch.Generator().manual_seed(0))
    assert abs(float((a == 4).double().mean()) - 0.5) < 0.04 and abs(float((i == 4).double().mean()) - 0.2) < 0.04


def test_layer_sweep_table_plot_and_skip_front(setup, tmp_path) -> None:
    model, x = setup
    res = layer_sweep(model, x, "all", n_pairs=20, n_control=20, plot=tmp_path / "sweep.png")
    assert [(r["block"], r["site"], r["code"]) for r in res["rows"]][:2] == [
        ("blocks.0", "output", "phase"), ("blocks.0", "output", "sign")]
    assert {r["layer"] for r in res["rows"] if r["site"] == "input"} == {"blocks.0:relu", "blocks.1:relu"}
    assert "| depth |" in res["table"] and (tmp_path / "sweep.png").stat().st_size > 0
    fast = layer_sweep(model, x, "all", n_pairs=20, n_control=20, skip_front=True)
    strip = ("activation_change", "identity_max_logit_diff")
    assert [{k: v for k, v in r.items() if k not in strip} for r in fast["rows"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in res["rows"]]
    # a site inside a residual block: the block still runs on its true input (the shortcut reads it)
    inner = [transplant_test(model, x, ["blocks.1.conv2"], code=("phase", "sign"), n_pairs=20, n_control=20,
                             skip_front=sk) for sk in (False, True)]
    assert [{k: v for k, v in r.items() if k not in strip} for r in inner[1]["rows"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in inner[0]["rows"]]
    assert all(r["identity_agreement"] == 1.0 for r in inner[1]["rows"])


def test_suite_registered_and_reports(setup, tmp_path) -> None:
    from aprkit.eval.suites import EvalContext, load_suites

    model, x = setup
    suite = load_suites()["transplant"]()
    ctx = EvalContext(model=model, progress=False, options={"transplant_n_pairs": 10, "transplant_n_control": 10,
                                                              "transplant_sites": ["output"]})
    res = suite.run(ctx, (x, torch.zeros(48, dtype=torch.long)))
    section = suite.report({"small": res, "again": res}, tmp_path)
    md = "\n".join(markdown_block(b) for b in section.blocks)
    assert "| small | output | phase |" in md and section.figures and section.figures[0].is_file()
    fast = EvalContext(model=model, progress=False, options={**ctx.options, "transplant_skip_front": True})
    assert suite.run(fast, (x, torch.zeros(48, dtype=torch.long)))["rows"] == res["rows"]  # the same numbers, faster


def test_suite_passes_prefix_tokens() -> None:
    """``transplant_prefix_tokens`` reaches the sweep (token outputs: the class token takes the donor's sign)."""
    from aprkit.eval.suites import EvalContext, load_suites

    torch.manual_seed(1)
    model = TokenNet().eval()
    x = natural_images(32, size=16, seed=2).float() / 255
    calibrate_head(model, model.head, x)
    suite = load_suites()["transplant"]()
    opts = {"transplant_n_pairs": 10, "transplant_n_control": 10, "transplant_sites": ["output"],
            "transplant_layers": ["mix"]}
    for value in ("receiver", "sign"):
        ctx = EvalContext(model=model, progress=False, options={**opts, "transplant_prefix_tokens": value})
        assert {r["prefix_tokens"] for r in suite.run(ctx, x)["rows"]} == {value}


def test_example_smoke_runs(tmp_path) -> None:
    import runpy
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "transplant_sweep.py"
    res = runpy.run_path(str(example), run_name="example")["main"](["--smoke", "--out", str(tmp_path)])
    assert all(r["identity_agreement"] == 1.0 for r in res["rows"])
    assert (tmp_path / "sweep.png").is_file()


def test_read_folder_decodes_class_folders(tmp_path) -> None:
    """The folder reader decodes <class>/*.png, classes in sorted order, at most ``per_class`` files each."""
    import numpy as np
    from PIL import Image

    from aprkit.eval.analyses.transplant import read_folder

    rng = np.random.default_rng(0)
    for c in ("b", "a"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    x, y, classes = read_folder(tmp_path, per_class=1)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.uint8 and y.tolist() == [0, 1] and classes == ["a", "b"]
    want = np.array(Image.open(tmp_path / "a" / "0.png"))
    assert torch.equal(x[0], torch.from_numpy(want).permute(2, 0, 1))
    with pytest.raises(FileNotFoundError):
        read_folder(tmp_path / "missing")


def test_complex_codes_by_hand() -> None:
    """On complex maps the sign code is the phase z/|z| (phase 0 at z == 0) and the magnitude |z|."""
    a = torch.tensor([[3 + 4j, 0], [1j, -2]], dtype=torch.complex64).reshape(1, 1, 2, 2)
    b = torch.tensor([[1, 2j], [0, -1 - 1j]], dtype=torch.complex64).reshape(1, 1, 2, 2)
    want = torch.tensor([[0.6 + 0.8j, 2], [0, -(2**0.5)]], dtype=torch.complex64).reshape(1, 1, 2, 2)
    assert torch.allclose(codes.transplant(a, b, "sign"), want, atol=1e-6)
    assert torch.allclose(codes.signum(a), torch.tensor([[0.6 + 0.8j, 1], [1j, -1]]).reshape(1, 1, 2, 2), atol=1e-6)
    assert torch.equal(codes.magnitude(a, "sign"), torch.tensor([[5.0, 0], [1, 2]]).reshape(1, 1, 2, 2))
    deleted = codes.with_magnitude(a, torch.full((1, 2, 2), 3.0), "sign")  # magnitude deletion: a mean magnitude
    assert torch.allclose(deleted, torch.tensor([[1.8 + 2.4j, 3], [3j, -3]]).reshape(1, 1, 2, 2), atol=1e-6)
    assert torch.allclose(codes.dc_only(a), torch.full_like(a, (1 + 5j) / 4))
    # the identity swap reproduces the map, for both codes
    z = torch.randn(2, 3, 4, 5, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    for code in ("sign", "phase"):
        assert torch.allclose(codes.transplant(z, z, code), z, atol=1e-5)
    # a real map written as complex gives the real codes' results (sign(0) = +1 = phase 0)
    x, y = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    x[0, 0, 0, 0] = 0
    xc, yc = x.to(torch.complex64), y.to(torch.complex64)
    assert torch.allclose(codes.transplant(xc, yc, "sign"), codes.transplant(x, y, "sign").to(torch.complex64))
    phase = codes.transplant(xc, yc, "phase")
    assert torch.allclose(phase.real, codes.transplant(x, y, "phase"), atol=1e-5) and phase.imag.abs().max() < 1e-5
    mean = codes.magnitude(y, "phase").mean(0)
    deleted = codes.with_magnitude(xc, mean, "phase")
    assert torch.allclose(deleted.real, codes.with_magnitude(x, mean, "phase"), atol=1e-5)
    with pytest.raises(ValueError, match="both be real or both complex"):
        codes.transplant(xc, y, "sign")


def test_to_grid_takes_complex_maps_only_when_asked() -> None:
    from aprkit.hidden import to_grid

    z = torch.randn(2, 3, 4, 4, dtype=torch.complex64)
    with pytest.raises(ValueError, match="floating feature map"):
        to_grid(z)
    assert to_grid(z, allow_complex=True)[0] is z


def test_sweep_on_small_phase_collapse_net() -> None:
    """The phase-collapse net's blocks output complex maps: the sweep runs on them (output site only)."""
    from aprkit.models import create_model

    torch.manual_seed(0)
    model = create_model("phase_collapse_cifar", widths=[8, 8, 16, 16, 16, 16, 16, 16]).eval()
    x = natural_images(32, size=32, seed=3).float() / 255
    calibrate_head(model, model.classifier, x)
    res = layer_sweep(model, x, "all", sites=("output",), every=3, n_pairs=16, n_control=16)
    assert [(r["block"], r["code"]) for r in res["rows"]] == [
        (f"layers.{i}", c) for i in (0, 3, 6, 7) for c in ("phase", "sign")]
    assert [r["depth"] for r in res["rows"]] == [0, 0, 3, 3, 6, 6, 7, 7]  # the blocks' own depths, not 0-3
    for r in res["rows"]:
        assert r["complex"] and r["negative_fraction"] is None and r["magnitude_variation"] > 0
        assert r["identity_agreement"] == 1.0  # the identity control: 100 % of the clean predictions
        assert r["activation_change"] > 0.01 and not r["flags"]
        assert r["follow_donor"] + r["follow_magnitude"] + r["neither"] == pytest.approx(1.0)
        assert 0.0 <= r["deletion_agreement"] <= 1.0 and 0.0 <= r["dc_only_agreement"] <= 1.0
    assert "sign (complex phase)" in res["table"]
    fast = layer_sweep(model, x, [f"layers.{i}" for i in (0, 6)], sites=("output",), n_pairs=16, n_control=16,
                       skip_front=True)  # skipped complex blocks hand on complex zeros
    strip = ("activation_change", "identity_max_logit_diff", "depth")
    assert [{k: v for k, v in r.items() if k not in strip} for r in fast["rows"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in res["rows"] if r["block"] in ("layers.0", "layers.6")]
    with pytest.raises(ValueError, match="no pre-activation site; use sites=\\('output',\\)"):
        layer_sweep(model, x, "all", sites=("input",), n_pairs=4)
    # named layers in another order than the network's: their depth is the forward pass's (it was the place in the
    # list, and the headline's "deepest" row was the last one named: layers.0 here; tester)
    back = layer_sweep(model, x, ["layers.6", "layers.0"], sites=("output",), n_pairs=16, n_control=16,
                       codes=("phase",))
    assert [(r["block"], r["depth"]) for r in back["rows"]] == [("layers.0", 0), ("layers.6", 1)]


def test_channels_last_sites_are_refused_not_misread():
    """ConvNeXt MLPs and Swin stages compute on (B, H, W, C): read as (B, C, H, W), the phase code would transform
    over (W, C). Such a site is refused with what to pick instead; channels-first sites of the same model run."""
    from torch import nn

    from aprkit.eval.analyses.transplant import transplant_test

    class ChannelsLastMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.block = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
            self.head = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.stem(x).permute(0, 2, 3, 1)
            z = z + self.block(z)
            return self.head(z.mean((1, 2)))

    torch.manual_seed(0)
    model = ChannelsLastMLP().eval()
    with torch.no_grad():
        model.head.weight.mul_(50)  # spread the untrained predictions over the classes (pairs need two)
    x = natural_images(24, 12, seed=3)
    with pytest.raises(ValueError, match=r"channels-last activations of shape \(N, 12, 12, 16\)"):
        transplant_test(model, x, ["block.2"], site="input", n_pairs=4, batch_size=8)
    res = transplant_test(model, x, ["stem"], site="output", n_pairs=4, batch_size=8)
    assert res["rows"] and res["rows"][0]["shape"] == [8, 12, 12]


def test_layer_sweep_cache_keys_model_data_and_pairs(setup) -> None:
    """``cache=`` resumes a sweep site by site, but only for the same weights, images and pairs: another model, other
    images or another pair seed are computed, not served another sweep's rows; the batch size is not in the key."""
    model, x = setup
    cache: dict = {}
    store = type("Store", (), {"get": lambda self, k: cache.get(k), "put": lambda self, k, v: cache.__setitem__(k, v)})()

    def sweep(m, images, seed=0, **kw):
        return layer_sweep(m, images, ["blocks.1"], sites=("output",), n_pairs=16, n_control=16, cache=store,
                           generator=torch.Generator().manual_seed(seed), **kw)["rows"]

    first = sweep(model, x)
    assert len(cache) == 1 and sweep(model, x, batch_size=7) == first and len(cache) == 1
    torch.manual_seed(1)
    other = SmallCNN().eval()
    calibrate_head(other, other.fc, x)
    assert sweep(other, x) == layer_sweep(other, x, ["blocks.1"], sites=("output",), n_pairs=16, n_control=16,
                                          generator=torch.Generator().manual_seed(0))["rows"]
    sweep(model, x.flip(0))
    sweep(model, x, seed=7)
    assert len(cache) == 4
    adapt = SmallCNN().eval()  # a batch norm without running statistics: its rows depend on the batch, so the batch
    adapt.stem.insert(1, nn.BatchNorm2d(8, track_running_stats=False))  # size is in its key (a review found the
    calibrate_head(adapt, adapt.fc, x)
    rows = {bs: sweep(adapt, x, batch_size=bs) for bs in (8, 32)}  # sweep's own key left it out)
    assert len(cache) == 6 and rows[8] != rows[32]


def test_whole_swap_control_flags_sites_inside_a_residual_branch(setup) -> None:
    """A's whole activation at a block output or at the final ReLU's input (branch + skip) moves every prediction to
    A's; at the branch's inner ReLU the skip path still carries B, so fewer follow and the row is flagged partial."""
    model, x = setup
    for site, layer, idx in (("output", "blocks.0", None), ("input", "blocks.1:relu", -1)):
        row = _row(transplant_test(model, x, [layer], site=site, call_index=idx, n_pairs=40))
        assert row["whole_swap_follow"] == 1.0 and not any(f.startswith("partial") for f in row["flags"])
        assert row["follow_donor"] <= row["whole_swap_follow"]
    inner = _row(transplant_test(model, x, ["blocks.1:relu"], site="output", call_index=0, n_pairs=40))
    assert inner["whole_swap_follow"] < 0.9
    assert any(f.startswith("partial") for f in inner["flags"])


def test_parameter_free_channels_last_sites_compiled_models_and_patch_tokens():
    """A parameter-free module inside a channels-last MLP is judged by the MLP (it was read as (B, C, H, W)); a
    compiled model is tested through the module it wraps (its hooks never ran: the test crashed); the patch
    embedding's tokens, which come before the class token is prepended, need no grid= (the model's prefix count
    made them 63 tokens); a squeeze-excite gate's activation or timm's own GELU are found as block activations."""
    import timm
    import torchvision
    from torch import nn

    from aprkit.eval.analyses.transplant import transplant_test
    from aprkit.hidden import attach
    from aprkit.hidden.sites import Site, last_activation_site

    class ChannelsLastMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.0), nn.Linear(16, 8))
            self.head = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.stem(x).permute(0, 2, 3, 1)
            return self.head((z + self.mlp(z)).mean((1, 2)))

    torch.manual_seed(0)
    model = ChannelsLastMLP().eval()
    with torch.no_grad():
        model.head.weight.mul_(50)
    x = natural_images(24, 12, seed=3)
    with pytest.raises(ValueError, match=r"channels-last activations of shape \(N, 12, 12, 16\)"):
        transplant_test(model, x, ["mlp.2"], n_pairs=4, batch_size=8)
    with attach(model.train(), ["mlp.1"], p=1.0), pytest.raises(ValueError, match="channels-last"):
        model(x[:4].float() / 255)
    model.eval()
    compiled = torch.compile(model, backend="eager")
    with pytest.raises(ValueError, match="compiled"):
        attach(compiled, ["stem"])
    plain = transplant_test(model, x, ["stem"], n_pairs=4, batch_size=8)
    assert transplant_test(compiled, x, ["_orig_mod.stem"], n_pairs=4, batch_size=8)["rows"] == plain["rows"]
    in_place = ChannelsLastMLP()
    in_place.stem.compile(backend="eager")  # compiled in place, below the top: hooks there would not run either
    with pytest.raises(ValueError, match=r"compiled .*\['stem'\]"):
        attach(in_place, ["mlp.0"])
    with pytest.raises(ValueError, match="compiled parts"):
        transplant_test(in_place, x, ["stem"], n_pairs=4, batch_size=8)
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, embed_dim=32, depth=1,
                            num_heads=2, num_classes=4, global_pool="avg").eval()  # (the class token is one class)
    with torch.no_grad():  # timm starts the head at zero: one class for every image
        vit.head.weight.copy_(torch.randn(vit.head.weight.shape, generator=torch.Generator().manual_seed(1)) * 5)
    rows = transplant_test(vit, natural_images(16, 32, seed=1), ["patch_embed", "blocks.0"], n_pairs=4,
                           batch_size=8)["rows"]
    assert [r["shape"] for r in rows][:1] == [[32, 8, 8]] and len(rows) == 2
    with attach(vit.train(), ["patch_embed", "blocks.0"], p=1.0, generator=torch.Generator().manual_seed(0)):
        vit(torch.rand(2, 3, 32, 32))
    se_net = torchvision.models.mobilenet_v3_small()
    assert last_activation_site(se_net, "features.1") == Site("features.1.block.0.2", "input", -1)
    gelu = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1), timm.layers.activations.GELU(), nn.Conv2d(4, 4, 1)))
    assert last_activation_site(gelu, "0") == Site("0.1", "input", -1)


def test_attach_warns_that_checkpointing_does_not_restore_a_generator():
    import warnings

    from torch import nn

    from aprkit.hidden import attach

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(nn.Conv2d(4, 2, 1))).train()
    net[1].grad_checkpointing = True  # timm's flag, on a stage (ConvNeXt, Swin)
    with attach(net, ["0"], p=1.0, generator=torch.Generator().manual_seed(0)), \
            pytest.warns(RuntimeWarning, match="activation checkpointing does not restore"):
        net(torch.rand(4, 3, 8, 8))
    with attach(net, ["0"], p=1.0), warnings.catch_warnings():
        warnings.simplefilter("error")
        net(torch.rand(4, 3, 8, 8))


def test_suite_says_not_measured_when_every_image_has_one_prediction(tmp_path):
    """A barely trained model that predicts one class for every image (the demo's quick run with another seed) gets
    a transplant result that says why nothing was measured; the run and its report go on (the run aborted)."""
    from torch import nn

    from aprkit.eval import evaluate

    class OneClass(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.layer1(x).mean((2, 3))) * 0 + torch.tensor([0.0, 1.0, 0.0])

    res = evaluate(OneClass(), suite="transplant", data=(natural_images(12, 16, seed=2), torch.arange(12) % 3),
                   out_dir=tmp_path, device="cpu", progress=False, options={"transplant_layers": ["layer1"]})
    value = res.models["OneClass"]["transplant"]
    assert value["rows"] == [] and value["note"].startswith("not measured: all 12 images have the same clean prediction")
    assert "not measured" in (tmp_path / "report.md").read_text()


def test_analyses_give_back_every_submodules_training_mode(setup) -> None:
    """transplant_test, layer_sweep and phase bias put the model in eval mode and give every submodule back its own
    flag: a module frozen in eval inside a training model stays in eval (model.train(flag) reset them all)."""
    from aprkit.eval.analyses.phase_bias import measure_phase_bias

    model, x = setup
    with torch.no_grad():
        labels = model(x).argmax(1)
    data = torch.utils.data.TensorDataset((x * 255).round().to(torch.uint8), labels)
    runs = (lambda: transplant_test(model, x, ["blocks.0"], n_pairs=5, n_control=2),
            lambda: layer_sweep(model, x, n_pairs=5, n_control=2),
            lambda: measure_phase_bias(model, data, n_pairs=4))
    try:
        for run in runs:
            model.train()
            model.stem.eval()
            run()
            assert model.training and model.blocks.training and not model.stem.training
            assert not model.stem[0].training
    finally:
        model.eval()


def test_module_names_holding_a_colon_are_module_names() -> None:
    """A ModuleDict key may hold ':' ("s:1"): list_blocks' names address modules; '<module>:<op>' is an op only
    when the text after the last ':' names a functional op ("stage:a" is a module)."""
    from aprkit.hidden import Site, attach, list_blocks

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages = nn.ModuleDict({"s:1": nn.Sequential(Block(3), Block(3))})
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.stages["s:1"](x).mean((2, 3)))

    net = Net()
    assert list_blocks(net) == ["stages.s:1.0", "stages.s:1.1"]
    assert Site("stages.s:1.0").module_path == "stages.s:1.0" and Site("stages.s:1.0").op is None
    assert (Site("stages.s:1.0:relu").module_path, Site("stages.s:1.0:relu").op) == ("stages.s:1.0", "relu")
    with attach(net, ["stages.s:1.0"]) as handle:
        assert list(handle.modules) == ["stages.s:1.0"]
    net.stages["stage:a"] = Block(3)  # an identifier after ':' reads as an op in a Site; attach takes modules only
    with attach(net, ["stages.stage:a"]) as handle:
        assert list(handle.modules) == ["stages.stage:a"]
    with pytest.raises(ValueError, match="functional op"):
        attach(net, ["stages.s:1.0:relu"])
    assert Site("stages.stage:a").op is None  # not a functional op: a module name, in the transplant test too

    class Staged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages = nn.ModuleDict({"stage:a": Block(3)})
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.stages["stage:a"](x).mean((2, 3)))

    torch.manual_seed(0)
    staged = Staged().eval()
    with torch.no_grad():  # class 0: red images, class 1: blue ones
        staged.fc.weight.copy_(torch.tensor([[1.0, 0, -1], [-1, 0, 1]])), staged.fc.bias.zero_()
    x = torch.zeros(16, 3, 8, 8)
    x[:8, 0], x[8:, 2] = torch.rand(8, 8, 8), torch.rand(8, 8, 8)
    assert transplant_test(staged, x, ["stages.stage:a"], n_pairs=2, n_control=2) is not None
    with pytest.raises(ValueError, match="no layer named 'stages.stage:a:rleu'.*a functional op after ':' is one of"):
        transplant_test(staged, x, ["stages.stage:a:rleu"], n_pairs=2, n_control=2)
    with pytest.raises(ValueError, match=r"layers \['fc', 'fc'\] name the module"):
        attach(net, (n for n in ["fc", "fc"]))


def test_magnitude_statistics_do_not_follow_the_batch_size(setup) -> None:
    """The dataset-mean magnitude and its variation were float64 sums over the evaluation's batches: batch 17 and 64
    moved magnitude_variation by an ulp (tester)."""
    model, x = setup
    big = torch.cat([x, x.flip(-1)])  # 96 images: more than one fixed chunk
    runs = [transplant_test(model, big, ["blocks.0"], n_pairs=20, batch_size=b, generator=torch.Generator().manual_seed(0))
            for b in (7, 96)]
    for key in ("magnitude_variation", "deletion_agreement"):
        assert _row(runs[0])[key] == _row(runs[1])[key], key


class _SE(nn.Module):
    """A squeeze-excite gate of Linear layers: they act on the pooled channels, the map stays (B, C, H, W)."""

    def __init__(self, c: int = 32, r: int = 4) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, c // r), nn.Linear(c // r, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))[:, :, None, None]


class _TupleBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(c, c, 3, padding=1), nn.ReLU()

    def forward(self, t):
        t = t[0] if isinstance(t, tuple) else t
        o = self.act(self.conv(t))
        return o, o.mean()


class _TupleNet(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(_TupleBlock(c), _TupleBlock(c), _TupleBlock(c))
        self.fc = nn.Linear(c, 5)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x))[0].mean((2, 3)))


def test_sites_are_checked_before_computing_and_the_default_sweep_leaves_out_what_it_cannot_measure(setup) -> None:
    """A squeeze-excite gate's 8x8 map of 32 channels is (B, C, H, W), not channels-last (its Linear sizes include the
    channels); a 1x1 stage is left out of the default sweep (listed in "skipped"), while a named one fails before
    any site is computed; blocks returning tuples run with skip_front (nothing skipped); bad arguments are named."""
    from aprkit.hidden import attach

    torch.manual_seed(0)
    se = nn.Sequential(nn.Conv2d(3, 32, 3, stride=4, padding=1), _SE()).train()
    with attach(se, ["1"], p=1.0):
        se(torch.rand(4, 3, 32, 32))

    model, x = setup  # 16 px: stem 16x16; add a stage pooled to 1x1 that the default sweep reaches
    deep = SmallCNN()
    deep.load_state_dict(model.state_dict())
    deep.blocks.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1)))
    calibrate_head(deep.eval(), deep.fc, x)
    res = layer_sweep(deep, x, sites=("output",), codes=("phase",), n_pairs=8, n_control=8)
    assert [r["block"] for r in res["rows"]] == ["blocks.0", "blocks.1"]
    assert [(k["block"], k["site"]) for k in res["skipped"]] == [("blocks.2", "output")]
    assert "below 2x2" in res["skipped"][0]["reason"]
    mixed = layer_sweep(deep, x, sites=("output",), n_pairs=8, n_control=8)  # phase and sign: the 1x1 keeps its sign
    assert [(r["block"], r["code"]) for r in mixed["rows"]] == [
        ("blocks.0", "phase"), ("blocks.0", "sign"), ("blocks.1", "phase"), ("blocks.1", "sign"), ("blocks.2", "sign")]
    assert [(k["block"], k["codes"]) for k in mixed["skipped"]] == [("blocks.2", ["phase"])]
    # the DC-only control of a 1x1 map changes nothing: flagged (its agreement of 100 % read as a mean readout)
    assert [any(f.startswith("dc-only trivial") for f in r["flags"]) for r in mixed["rows"]] == [False] * 4 + [True]
    calls: list[int] = []
    h = deep.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    transplant_test(deep, x, ["blocks.0"], n_pairs=8, n_control=8)
    one_site, calls[:] = len(calls), []
    with pytest.raises(ValueError, match="below 2x2"):  # named: refused after one probing forward per site
        transplant_test(deep, x, ["blocks.0", "blocks.2"], n_pairs=8, n_control=8)
    assert len(calls) < one_site / 2  # the clean predictions and the probes, not the transplants of blocks.0
    with pytest.raises(ValueError, match="below 2x2"):
        layer_sweep(deep, x, ["blocks.0", "blocks.2"], sites=("output",), n_pairs=8, n_control=8)
    h.remove()

    net = _TupleNet().eval()
    calibrate_head(net, net.fc, x)
    a = transplant_test(net, x, ["blocks.2.act"], site="input", skip_front=True, n_pairs=8, n_control=8)
    b = transplant_test(net, x, ["blocks.2.act"], site="input", n_pairs=8, n_control=8)
    assert a["rows"][0]["follow_donor"] == b["rows"][0]["follow_donor"]
    assert a["rows"][0]["identity_agreement"] == 1.0

    for kwargs, err, match in (({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
                               ({"n_pairs": 2.5}, ValueError, "n_pairs must be a positive int"),
                               ({"max_images": 0}, ValueError, "max_images must be a positive int")):
        with pytest.raises(err, match=match):
            transplant_test(model, x, ["blocks.0"], **kwargs)
    with pytest.raises(ValueError, match="data is empty"):
        transplant_test(model, x[:0], ["blocks.0"])
    with pytest.raises(ValueError, match="layers is empty"):
        transplant_test(model, x, [])
    with pytest.raises(ValueError, match="class indices >= 0"):
        transplant_test(model, (x, torch.arange(len(x)) % 3 - 1), ["blocks.0"])
    unlabelled = transplant_test(model, (x, -torch.ones(len(x), dtype=torch.long)), ["blocks.0"], n_pairs=8,
                                 n_control=8)  # NO_LABEL throughout: an unlabelled set (noise:), measured as such
    assert unlabelled["clean_accuracy"] is None
    with pytest.raises(ValueError, match="0..255 floats"):
        transplant_test(model, x * 255, ["blocks.0"])
    with pytest.raises(TypeError, match="module name"):
        transplant_test(model, x, [model.blocks[0]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="module name"):
        attach(model, [3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="call_index must be an int"):
        transplant_test(model, x, ["blocks.0"], call_index=True)  # type: ignore[arg-type]
    one = layer_sweep(model, x, ["blocks.0"], sites="output", codes=("phase",), n_pairs=8, n_control=8)
    assert [r["site"] for r in one["rows"]] == ["output"]  # a string is one site, not its letters
    double = transplant_test(model.double(), x, ["blocks.0"], n_pairs=8, n_control=8)  # a float64 model
    model.float()
    assert double["rows"][0]["identity_agreement"] == 1.0


def test_controls_do_not_move_with_n_pairs_and_more_pairs_extend_fewer() -> None:
    """The controls' images came from the same generator right after the pairs: another n_pairs changed them (DC-only
    agreement 22 % at 100 pairs, 28 % at 101); and the first 100 of 300 pairs were not the 100 pairs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    x = natural_images(48, size=16, seed=3).float() / 255
    calibrate_head(model, model[-1], x)
    runs = {n: transplant_test(model, x, ["2"], n_pairs=n, n_control=16, keep_predictions=True,
                               generator=torch.Generator().manual_seed(5)) for n in (10, 11, 30)}
    controls = ("identity_agreement", "deletion_agreement", "dc_only_agreement")
    for n in (11, 30):
        assert [runs[n]["rows"][0].get(k) for k in controls] == [runs[10]["rows"][0].get(k) for k in controls]
        assert runs[n]["pairs_a"][:10] == runs[10]["pairs_a"] and runs[n]["pairs_b"][:10] == runs[10]["pairs_b"]


def test_max_images_of_a_tensor_spreads_over_class_sorted_data() -> None:
    """On a tensor, max_images took the first N images (two classes of class-sorted data) where datasets spread."""
    from aprkit.eval.analyses.transplant_data import load_data

    x = torch.zeros(100, 3, 4, 4, dtype=torch.uint8)
    y = torch.arange(10).repeat_interleave(10)
    _, labels = load_data((x, y), max_images=10)
    assert sorted(labels.tolist()) == list(range(10))


def test_a_dotted_functional_op_name_suggests_the_colon_form() -> None:
    from aprkit.hidden.sites import resolve_module

    class Block(nn.Module):  # the model's own module: its forward may call F.relu
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(self.conv(x))

    model = nn.Sequential(Block(), nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match=r"for a functional relu called inside '0': '0:relu'"):
        resolve_module(model, "0.relu")
    with pytest.raises(ValueError) as err:  # torch's own layers call no functional relu: no such hint
        resolve_module(model, "1.relu")
    assert "functional relu" not in str(err.value)


def test_max_images_keeps_the_labels_of_the_images_kept() -> None:
    """labels= of the whole data with max_images: a loader's and a dataset's images got the first labels or none."""
    from torch.utils.data import DataLoader, TensorDataset

    from aprkit.eval.analyses.transplant_data import load_data

    x = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 3, 2, 2).contiguous()
    y = torch.arange(10).repeat_interleave(10)
    ds = TensorDataset(x, y)
    for data in (DataLoader(ds, batch_size=7), ds, x, (x, y)):
        images, labels = load_data(data, labels=y, max_images=10)
        index = (images[:, 0, 0, 0] * 255).round().long()  # each image's own index
        assert torch.equal(labels, y[index]), type(data).__name__


def test_labels_of_another_length_than_the_data_are_refused_with_max_images() -> None:
    from aprkit.eval.analyses.transplant_data import load_data

    x = torch.zeros(20, 3, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="labels must have one entry per image"):
        load_data(x, labels=torch.zeros(1000, dtype=torch.long), max_images=5)
    x = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 3, 2, 2).contiguous()
    batches = [(x[i:i + 4], torch.arange(i, i + 4)) for i in range(0, 40, 4)]  # a list of batches: the first images
    images, labels = load_data(batches, labels=torch.arange(40), max_images=5)
    assert labels.tolist() == [0, 1, 2, 3, 4] == (images[:, 0, 0, 0] * 255).round().long().tolist()


def test_a_sized_iterable_dataset_is_read_in_order_with_max_images() -> None:
    from torch.utils.data import IterableDataset

    from aprkit.eval.analyses.transplant_data import load_data

    class Stream(IterableDataset):
        def __len__(self) -> int:
            return 6

        def __iter__(self):
            return iter((torch.full((3, 2, 2), i, dtype=torch.uint8), i % 2) for i in range(6))

    images, labels = load_data(Stream(), max_images=3)
    assert (images[:, 0, 0, 0] * 255).round().long().tolist() == [0, 1, 2] and labels.tolist() == [0, 1, 0]


def test_the_phase_code_gives_a_bin_without_phase_phase_zero():
    """The transplant codes keep the papers' ``angle(0) == 0`` (the sign +1 of 0), unlike APR's image ops: a donor
    channel that is all zero takes the receiver's amplitude at phase 0, ``|F(b)| * exp(i * angle(F(a)))`` exactly."""
    from aprkit.hidden.codes import transplant, with_magnitude

    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64), torch.rand(2, 3, 6, 6, generator=g,
                                                                               dtype=torch.float64)
    a[0, 1] = 0.0  # dead in the donor only
    fa, fb = torch.fft.fftn(a, dim=(-2, -1)), torch.fft.fftn(b, dim=(-2, -1))
    want = torch.fft.ifftn(torch.polar(fb.abs(), fa.angle()), dim=(-2, -1)).real
    got = transplant(a, b, "phase")
    torch.testing.assert_close(got, want)
    assert float(got[0, 1, 0, 0]) > 1.0  # the receiver's channel summed at the origin
    mean = fb.abs().mean(0)
    torch.testing.assert_close(with_magnitude(a, mean, "phase"),
                               torch.fft.ifftn(torch.polar(mean.expand_as(fa), fa.angle()), dim=(-2, -1)).real)


def test_a_vit_taking_any_image_size_is_read_on_its_input_grid() -> None:
    """timm's ``dynamic_img_size`` ViT configured for 16 x 32 images and given 32 x 16 ones has an 8 x 4 patch grid:
    the transplant rows and FeatureAPR read the tokens on it (they took the configured 4 x 8 grid, transposing every
    row of patches without a word), and a square input's grid is square."""
    import timm

    from aprkit.hidden import PatchGrid, attach, feature_apr

    torch.manual_seed(0)
    vit = timm.models.VisionTransformer(img_size=(16, 32), patch_size=4, embed_dim=16, depth=1, num_heads=2,
                                        num_classes=4, dynamic_img_size=True, global_pool="avg").eval()
    tall = natural_images(16, 32, seed=1).transpose(-1, -2)[..., :16].contiguous()  # 32 x 16
    feats: list[torch.Tensor] = []
    h = vit.head.register_forward_pre_hook(lambda m, a: feats.append(a[0]))
    with torch.no_grad():  # timm starts the head at zero (one class for every image): a random head, centred
        vit(tall.float() / 255)
        f = feats[0]
        vit.head.weight.copy_(torch.randn(vit.head.weight.shape, generator=torch.Generator().manual_seed(1))
                              / f.std(0).mean())
        vit.head.bias.copy_(-(vit.head.weight @ f.mean(0)))
    h.remove()
    for images, grid in ((tall, [8, 4]), (natural_images(16, 32, seed=1), [8, 8])):
        rows = transplant_test(vit, images, ["blocks.0"], n_pairs=4, batch_size=8)["rows"]
        assert rows[0]["shape"] == [16, *grid]
    with PatchGrid(vit) as patches:
        vit(tall[:2].float() / 255)
    assert patches.grid == (8, 4) and not vit.patch_embed._forward_pre_hooks
    seen: dict[str, torch.Tensor] = {}
    vit.train()
    handle = attach(vit, ["blocks.0"], p=1.0)
    vit.blocks[0].register_forward_hook(lambda m, a, o: seen.setdefault("in", o.detach().clone()), prepend=True)
    vit.norm.register_forward_pre_hook(lambda m, a: seen.setdefault("out", a[0].detach().clone()))
    torch.manual_seed(5)
    vit(tall[:4].float() / 255)
    torch.manual_seed(5)
    want = feature_apr(seen["in"], p=1.0, num_prefix_tokens=1, grid=(8, 4))
    torch.testing.assert_close(seen["out"], want)
    assert handle.modules["blocks.0"].grid == (8, 4)
    handle.remove()
    assert not vit.patch_embed._forward_pre_hooks


def test_the_patch_grid_reaches_a_thread_that_ran_no_forward_and_an_older_pickle_loads() -> None:
    """Autograd's CUDA device thread recomputes a checkpointed block in the backward pass without running the patch
    embedding: it reads the latest forward's grid (it took the configured one, transposed for a 32 x 16 input). An
    attached model's hook state pickled by an older aprkit (without the grid reader and the call check) still
    trains."""
    import threading

    import timm

    from aprkit.hidden import PatchGrid, attach
    from aprkit.hidden.attach import _HookState

    vit = timm.models.VisionTransformer(img_size=(16, 32), patch_size=4, embed_dim=16, depth=1, num_heads=2,
                                        num_classes=4, dynamic_img_size=True)
    tall = torch.rand(2, 3, 32, 16)
    with PatchGrid(vit) as patches:
        vit(tall)
        seen: list[object] = []
        worker = threading.Thread(target=lambda: seen.append(patches.grid))
        worker.start()
        worker.join()
    assert seen == [(8, 4)]
    handle = attach(vit.train(), ["blocks.0"], p=1.0)
    state = next(h for h in vit._forward_pre_hooks.values() if isinstance(getattr(h, "__self__", None), _HookState))
    old = {k: v for k, v in state.__self__.__getstate__().items() if k not in ("patches", "names", "checked_calls")}
    state.__self__.__setstate__(old)
    vit(tall).sum().backward()  # the configured 4 x 8 grid: no patch reader, as in the older aprkit
    assert handle.modules["blocks.0"].grid == (4, 8)
    handle.remove()


def test_a_plain_sequential_network_is_swept_at_its_activations() -> None:
    """AllConv (and VGG-like nets) are one ``nn.Sequential`` of plain layers: no repeated blocks, so the default
    sweep failed ("found no repeated blocks"); their activation modules (AllConv's own SigmoidGELU among them) now
    stand for the blocks, the output site after each and the pre-activation site before it."""
    from aprkit.hidden import Site, last_activation_site, list_blocks
    from aprkit.models import create_model

    torch.manual_seed(0)
    net = create_model("allconv", num_classes=10, width1=8, width2=16).eval()
    blocks = list_blocks(net)
    assert blocks == [f"features.{i}" for i in (2, 5, 8, 13, 16, 19, 24, 27, 30)]
    assert last_activation_site(net, "features.2") == Site("features.2", "input", -1)
    x = natural_images(24, 32, seed=1)
    with torch.no_grad():  # a random head, centred on these images: predictions of several classes
        f = net.forward_features(x.float() / 255)
        net.classifier.weight.copy_(torch.randn(10, f.shape[1], generator=torch.Generator().manual_seed(0))
                                    / f.std(0).mean())
        net.classifier.bias.copy_(-(net.classifier.weight @ f.mean(0)))
    res = layer_sweep(net, x, n_pairs=8, n_control=8, sites=["output", "input"], codes=["sign"], every=4)
    assert [(r["layer"], r["site"]) for r in res["rows"]] == [
        (b, s) for s in ("output", "input") for b in ("features.2", "features.16", "features.30")]
    assert all(r["identity_agreement"] == 1.0 for r in res["rows"]) and not res["skipped"]
    with pytest.raises(ValueError, match="no activation module held once.*transplant_layers"):
        list_blocks(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten()))
    relu = nn.ReLU()  # one ReLU module called after both convolutions stands for neither layer
    shared = nn.Sequential(nn.Conv2d(3, 4, 3), relu, nn.Conv2d(4, 4, 3), relu, nn.Conv2d(4, 4, 3), nn.GELU())
    assert list_blocks(shared) == ["5"]
    with pytest.raises(ValueError, match="no activation module held once.*pass layers"):
        list_blocks(nn.Sequential(nn.Conv2d(3, 4, 3), relu, nn.Conv2d(4, 4, 3), relu))


def test_a_model_returning_a_tuple_is_refused_with_a_sentence() -> None:
    """A model returning ``(logits, features)`` failed deep inside with "'tuple' object has no attribute 'float'"."""

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = F.relu(self.a(x))
            return self.fc(h.mean((2, 3))), h

    with pytest.raises(ValueError, match="returned a tuple; the transplant test needs logits"):
        transplant_test(Pair(), torch.rand(8, 3, 16, 16), ["a"], n_pairs=4)


def test_the_code_functions_refuse_anything_but_a_grid():
    """Tokens (B, N, D) were taken as images: with dims="chw" the batch axis joined the FFT, so one sample's
    transplant depended on the other samples in its batch."""
    from aprkit.hidden import dc_only, magnitude, transplant, with_magnitude
    from aprkit.hidden.codes import signum as codes_signum

    tokens = torch.randn(4, 10, 8)
    calls = (lambda: transplant(tokens, tokens, "phase", "chw"), lambda: magnitude(tokens, "phase"),
             lambda: with_magnitude(tokens, tokens.abs(), "phase"), lambda: dc_only(tokens),
             lambda: transplant(torch.randn(1, 2, 3, 4, 4), torch.randn(1, 2, 3, 4, 4), "phase"))
    for call in calls:
        with pytest.raises(ValueError, match=r"feature grid \(B, C, h, w\).*to_grid"):
            call()
    assert torch.equal(transplant(tokens, -tokens, "sign"), tokens)  # elementwise: any shape (a ViT's prefix tokens)
    for code in ("phase", "sign"):  # an empty batch: both codes refuse it alike (the sign code returned it)
        with pytest.raises(ValueError, match=r"donor holds no values \(shape \(0, 3, 4, 4\)\); expected at least one"):
            transplant(torch.zeros(0, 3, 4, 4), torch.zeros(0, 3, 4, 4), code)
    nan = torch.tensor([float("nan"), -0.0, 0.0, -2.0, 3.0])
    got = codes_signum(nan)  # a NaN feature stays NaN (it was -1: a transplant of it looked finite)
    assert got[0].isnan() and got[1:].tolist() == [1.0, 1.0, -1.0, 1.0]
    assert transplant(nan.view(1, 1, 1, 5), nan.view(1, 1, 1, 5).abs(), "sign")[0, 0, 0, 0].isnan()
    a, b = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    assert torch.allclose(transplant(a, b, "phase", "chw")[:2], transplant(a[:2], b[:2], "phase", "chw"), atol=1e-6)


def test_the_headline_and_summary_carry_the_last_sites_flags(capsys):
    """At ResNet-20's last block output (a DC readout, the transplant inert) the headline read 0.00 % follow the
    phase donor, a number that cannot be anything else: the flags now stand beside it."""
    from aprkit.eval.analyses.transplant_tables import summary_table
    from aprkit.eval.suites.transplant import TransplantSuite

    def row(depth, donor, flags):
        return {"layer": f"b{depth}", "site": "output", "code": "phase", "depth": depth, "follow_donor": donor,
                "follow_magnitude": 1 - donor, "flags": flags}

    rows = [row(0, 0.5, []), row(1, 0.0, ["inert: the transplant leaves the activation unchanged",
                                          "dc-readout: the output reads only the channel means here"])]
    (m,) = TransplantSuite.headline(TransplantSuite, {"rows": rows})
    assert m.value == 0.0 and m.label.endswith("(last block, output)")
    (cell,) = summary_table({"r20": {"rows": rows, "clean_accuracy": 0.9}}).rows[0][3]
    assert cell.text == "0.0 / 100.0 (inert, dc-readout)"
    (plain,) = TransplantSuite.headline(TransplantSuite, {"rows": rows[:1]})
    assert plain.label.endswith("(last block, output)")
    # a 1x1 last stage has sign rows only: the phase code's "last block" is an earlier one, named
    deeper = [*rows, {**row(2, 0.3, []), "code": "sign", "block": "b2"}]
    phase, sign = TransplantSuite.headline(TransplantSuite, {"rows": deeper})
    assert phase.label == "transplant: follows the phase donor (last block, output)" and sign.label.endswith("output)")
    assert phase.note.startswith("last block, output: at b1; inert; dc-readout")
    assert summary_table({"r": {"rows": deeper}}).rows[0][3][0].text.endswith("(at b1, inert, dc-readout)")
    # the input of the last nonlinearity too (a ReLU network's pre-activation, where its sign code shows while the
    # output after ReLU and pooling is inert), and layers the user named are called so (they were "last block")
    both = [*rows, {**row(1, 0.4, []), "site": "input"}]
    out_m, in_m = TransplantSuite.headline(TransplantSuite, {"rows": both, "config": {"layers": ["b0", "b1"]}})
    assert (out_m.name, out_m.value) == ("transplant.phase_follow_donor", 0.0)
    assert (in_m.name, in_m.value, in_m.note) == ("transplant.phase_follow_donor_input", 0.4, "")
    assert in_m.label == "transplant: follows the phase donor (deepest named layer, input)"
    # the console summary of aprkit eval prints names and values: the flags go beside it as a note (tester: it read
    # 0.00 % for both codes, the flags only in the report)
    from types import SimpleNamespace

    from aprkit.cli.eval import _print_summary

    assert m.note == "last block, output: inert; dc-readout (the report has every layer's rates)" and plain.note == ""
    _print_summary(SimpleNamespace(headlines=lambda: {"r20": [m], "other": [plain]}))
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["transplant.phase_follow_donor", "0.00%*", "50.00%"]
    assert out[2] == "* transplant.phase_follow_donor (r20): " + m.note
    # the report's summary table: one label for every model (it was the first model's, with that model's flags,
    # so a second, flagged model's value stood under a clean label, or a clean one's under "inert"); each model's
    # flags beside its own value
    from aprkit.eval.report.results import summary_section

    for order in (["other", "r20"], ["r20", "other"]):
        heads = {"r20": [m], "other": [plain]}
        (table,) = summary_section({k: heads[k] for k in order}).blocks
        row = [c if isinstance(c, str) else "".join(x.text for x in c) for c in table.rows[0]]
        assert row[0] == "transplant: follows the phase donor (last block, output) %"
        assert row[2:] == (["50.00", "0.00*"] if order[0] == "other" else ["0.00*", "50.00"])
        assert "(r20, " in "".join(x.text for x in table.notes) and "inert; dc-readout" in "".join(
            x.text for x in table.notes)


def test_errors_name_the_users_arguments_and_shapes():
    """(tester) a 1x1 grid under the phase code named the transform's internal argument (phase_source); images
    (N, H, W, C) were refused by the model on a 16-row block, with that block's shape."""
    from aprkit.eval.analyses.transplant import transplant_test
    from aprkit.hidden import transplant

    x = torch.rand(4, 3, 1, 1)
    with pytest.raises(ValueError, match=r"^donor must have h >= 2 and w >= 2 for the phase code .*use code='sign'"):
        transplant(x, x, "phase")
    assert torch.equal(transplant(x, x, "sign"), x)
    with pytest.raises(ValueError, match=r"images of shape \(40, 32, 32, 3\) looks like channels-last"):
        transplant_test(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10)),
                        torch.rand(40, 32, 32, 3), ["0"])


def test_named_layers_are_swept_in_the_order_their_outputs_are_made(setup):
    """Named layers took their depth from the list, so the headline's "deepest" row was the last one named; ordered
    by the first call, a module holding another (blocks, blocks.1) came before it though its output comes after
    (review): the order their outputs are made, blocks.1 then blocks (its last block's output, the same map)."""
    model, x = setup
    res = layer_sweep(model, x, ["blocks", "blocks.1", "stem"], sites=("output",), codes=("sign",), n_pairs=8,
                      n_control=8)
    assert [(r["block"], r["depth"]) for r in res["rows"]] == [("stem", 0), ("blocks.1", 1), ("blocks", 2)]
    assert res["rows"][1]["follow_donor"] == res["rows"][2]["follow_donor"]  # one map at both sites
