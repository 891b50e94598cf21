"""The GPU code paths on CUDA against the CPU: Fourier ops, APR augmentations, evaluate, training, the transplant test
(the corruptions and their random draws: ``test_cuda_corruptions.py``; every evaluation suite:
``test_cuda_suites.py``; the shared pieces: ``cuda_common.py``).

Skipped without CUDA. ``APRKIT_TEST_DEVICE=cpu`` runs the same checks with the CPU standing in for the
device (how these modules are tested on machines without a GPU); ``benchmarks/gpu_check.py`` runs them first.
Random draws come from CPU generators wherever an API takes one, so device and CPU see the same random
streams and must agree to float tolerance; where a path draws on the device, determinism and statistics
are checked instead.
"""

from __future__ import annotations

import copy

import pytest
import torch

from aprkit import fourier
from aprkit.augment import APRSP, APRPair, APRSingleBatch, apr_pair
from aprkit.hidden import FeatureAPR
from conftest import natural_images
from cuda_common import DEVICE, DEVICE_MARKS, TinyNet, assert_images_close, cpu_gen, on_device
from cuda_common import x8_fixture, xf_fixture  # noqa: F401 (the fixtures x8, xf)

pytestmark = DEVICE_MARKS


# --------------------------------------------------------------------------------------------- fourier
FOURIER_OPS = {
    "swap_amplitude": lambda x, y: fourier.swap_amplitude(x, y),
    "swap_amplitude_hw": lambda x, y: fourier.swap_amplitude(x, y, dims="hw"),
    "mix_amplitude": lambda x, y: fourier.mix_amplitude(x, y, 0.3),
    "mix_amplitude_tensor": lambda x, y: fourier.mix_amplitude(x, y, torch.linspace(0, 1, x.shape[0], device=x.device)),
    "low_frequency_swap": lambda x, y: fourier.low_frequency_swap(x, y, 0.1),
    # bins without phase take phase 0 (the transplant test's codes): a masked path that runs on every device batch
    "swap_amplitude_phase0": lambda x, y: fourier.swap_amplitude(x, y, zero_bins="phase0"),
    "mix_amplitude_phase0": lambda x, y: fourier.mix_amplitude(x, y, 0.3, zero_bins="phase0"),
    "low_frequency_swap_phase0": lambda x, y: fourier.low_frequency_swap(x, y, 0.1, zero_bins="phase0"),
    "phase_only_mean": lambda x, y: fourier.phase_only(x, "mean"),
    "phase_only_unit": lambda x, y: fourier.phase_only(x if x.is_floating_point() else x / 255, "unit"),  # float only
    "amplitude_only": lambda x, y: fourier.amplitude_only(x),
    "roundtrip": lambda x, y: fourier.recombine(*fourier.amplitude_phase(x)),
}


@pytest.mark.parametrize("op", sorted(FOURIER_OPS))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_fourier_ops_match_cpu(op: str, dtype: torch.dtype, x8: torch.Tensor, xf: torch.Tensor) -> None:
    x = x8 if dtype == torch.uint8 else xf
    y = x.roll(1, 0)
    fn = FOURIER_OPS[op]
    cpu = fn(x, y)
    dev = fn(x.to(DEVICE), y.to(DEVICE))
    assert_images_close(dev, cpu, atol=1e-3 if op == "phase_only_unit" else 1e-4)


def test_fourier_gradients_on_device(xf: torch.Tensor) -> None:
    x = xf.to(DEVICE, copy=True).requires_grad_(True)
    fourier.mix_amplitude(x, x.roll(1, 0).detach(), 0.5).square().sum().backward()
    xc = xf.clone().requires_grad_(True)
    fourier.mix_amplitude(xc, xc.roll(1, 0).detach(), 0.5).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.cpu() - xc.grad).abs().max() < 1e-3


# --------------------------------------------------------------------------------------------- APR
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16])
def test_apr_pair_matches_cpu(dtype: torch.dtype, x8: torch.Tensor, xf: torch.Tensor) -> None:
    x = x8 if dtype == torch.uint8 else xf.to(dtype)
    perm = torch.randperm(x.shape[0], generator=cpu_gen())
    mask = torch.tensor([True, False] * 3)
    for m in (None, mask):
        cpu = apr_pair(x, perm, m)
        for p in (perm, perm.to(DEVICE)):  # partner indices on the CPU or on the device
            dev = apr_pair(x.to(DEVICE), p, None if m is None else m.to(DEVICE))
            assert_images_close(dev, cpu, atol=2e-3 if dtype == torch.float16 else 1e-4)
    assert torch.equal(apr_pair(x.to(DEVICE), perm, mask)[1].cpu(), x[1])  # unselected images are returned exactly


def test_apr_pair_under_autocast(xf: torch.Tensor) -> None:
    x = xf.to(DEVICE)
    perm = torch.randperm(x.shape[0], generator=cpu_gen()).to(DEVICE)
    half = torch.float16 if DEVICE.type == "cuda" else torch.bfloat16
    with torch.autocast(DEVICE.type, dtype=half):
        out = apr_pair(x, perm)
    assert out.dtype == torch.float32
    assert (out - apr_pair(x, perm)).abs().max() < 1e-3


def test_a_grey_image_stays_grey_on_device(xf: torch.Tensor) -> None:
    """A grey image's channel frequencies 1 and 2 must be exact zeros in the device's FFT too, or the rule that keeps
    bins without phase at 0 does nothing there: APR-P of a grey image with colour partners stays grey (eager and
    through the APR-SP batch), as on the CPU."""
    x = xf.clone()
    x[0] = x[0, :1].expand_as(x[0])  # grey, stored as RGB
    perm = torch.roll(torch.arange(x.shape[0]), 1)
    z = torch.fft.rfftn(x[:1].to(DEVICE), dim=(1, 2, 3))
    on_device(z)
    # exact zeros are not promised by every FFT library (cuFFT's plans may leave rounding there); the rule that keeps
    # such bins at 0 counts rounding-sized power as none (no_phase_power), which is what the checks below rely on
    noise = float(z[0, 1:].abs().amax()) / float(z[0, 0].abs().amax())
    assert noise <= 1e-6, f"the device FFT leaves {noise:.1e} of the image's power at a grey image's colour bins"
    for out in (apr_pair(x.to(DEVICE), perm.to(DEVICE)),
                APRSP(p=1.0, seed=0)(x.to(DEVICE), torch.zeros(x.shape[0], dtype=torch.long, device=DEVICE))[0]):
        grey = out[0 if out.shape[0] == x.shape[0] else x.shape[0]].cpu()
        assert float((grey - grey[:1]).abs().amax()) < 1e-5
    torch.testing.assert_close(apr_pair(x.to(DEVICE), perm.to(DEVICE))[0].cpu(), apr_pair(x, perm)[0],
                               atol=1e-5, rtol=0)


def test_apr_pair_gradient_on_device(xf: torch.Tensor) -> None:
    perm = torch.randperm(xf.shape[0], generator=cpu_gen())
    x = xf.to(DEVICE, copy=True).requires_grad_(True)
    apr_pair(x, perm.to(DEVICE)).sum().backward()
    xc = xf.clone().requires_grad_(True)
    apr_pair(xc, perm).sum().backward()
    assert (x.grad.cpu() - xc.grad).abs().max() < 1e-3


@pytest.mark.parametrize("per_sample", [False, True])
def test_aprpair_module_on_device(per_sample: bool, xf: torch.Tensor) -> None:
    y = torch.arange(xf.shape[0])
    cpu_out, cpu_y = APRPair(p=0.7, per_sample=per_sample, seed=3)(xf, y)
    dev_out, dev_y = APRPair(p=0.7, per_sample=per_sample, seed=3)(xf.to(DEVICE), y.to(DEVICE))  # CPU generator
    assert_images_close(dev_out, cpu_out)
    assert torch.equal(dev_y.cpu(), cpu_y)
    g1, g2 = (torch.Generator(DEVICE).manual_seed(1) for _ in range(2))  # generator on the device
    a = APRPair(p=1.0, per_sample=per_sample, generator=g1)(xf.to(DEVICE))
    b = APRPair(p=1.0, per_sample=per_sample, generator=g2)(xf.to(DEVICE))
    on_device(a)
    assert (a - b).abs().max() < 1e-6 and not torch.equal(a.cpu(), xf)


def test_aprpair_compiled_core_on_device(xf: torch.Tensor) -> None:
    """Issue 17: ``APRPair(compile_core=...)`` on the device gives eager's numbers (aot_eager: tracing, no codegen)."""
    torch._dynamo.reset()
    x = xf.to(DEVICE)
    for kw in ({"seed": 3}, {"generator": torch.Generator(DEVICE).manual_seed(3), "per_sample": True}):
        eager = APRPair(p=1.0, **kw)(x)
        kw = kw | ({"generator": torch.Generator(DEVICE).manual_seed(3)} if "generator" in kw else {})
        compiled = APRPair(p=1.0, compile_core={"backend": "aot_eager"}, **kw)
        assert_images_close(compiled(x), eager.cpu(), atol=1e-6)
    torch._dynamo.reset()


def test_apr_pair_no_host_sync_on_device(xf: torch.Tensor) -> None:
    """Issue 17: no host read in APR-P on an accelerator (finiteness is not looked for there: NaN images come out
    NaN, as do the images taking their amplitude); the CPU keeps its ValueError."""
    x = xf.to(DEVICE)
    perm = torch.tensor([4, 0, 1, 2, 5, 3], device=DEVICE)
    module, aprsp = APRPair(p=1.0, seed=0), APRSP(p=1.0, seed=0)  # CPU generators: draws copied without a sync
    calls = (lambda t: apr_pair(t, perm), module, lambda t: aprsp(t, perm))
    for call in calls:  # warm-up: cuFFT plans, allocator
        call(x)
    bad = x.clone()
    bad[4, 1, 3, 5] = float("nan")
    if DEVICE.type != "cuda":  # the CPU standing in: the check is free there and kept
        with pytest.raises(ValueError, match="NaN"):
            apr_pair(bad, perm)
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outs = [call(t) for call in calls for t in (x, bad)]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isnan(outs[1]).flatten(1).all(1).tolist() == [True, False, False, False, True, False]
    assert torch.isfinite(outs[0]).all()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_apr_single_batch_matches_cpu(dtype: torch.dtype, x8: torch.Tensor, xf: torch.Tensor) -> None:
    x = x8 if dtype == torch.uint8 else xf
    cpu = APRSingleBatch(p=0.8, seed=2)(x)
    dev = APRSingleBatch(p=0.8, seed=2)(x.to(DEVICE))
    on_device(dev)
    assert dev.shape == cpu.shape and dev.dtype == cpu.dtype
    # a geometric op may round one sampling coordinate the other way, and the recombination then spreads
    # that pixel over its whole image: all but one image must agree
    d = (dev.cpu().double() - cpu.double()).abs().flatten(1)
    off = (d > (1.0 if dtype == torch.uint8 else 1e-4)).double().mean(1)
    assert int((off <= 1e-2).sum()) >= x.shape[0] - 1, off.tolist()
    g = torch.Generator(DEVICE)
    a = APRSingleBatch(p=1.0, generator=g.manual_seed(4))(x.to(DEVICE))
    b = APRSingleBatch(p=1.0, generator=g.manual_seed(4))(x.to(DEVICE))
    assert torch.equal(a, b) and a.dtype == dtype


def test_apr_single_draws_per_item_with_a_device_generator() -> None:
    """A generator on the device draws image i's APR-S parameters the same for a batch of 4, 8 or 300 (the device
    kernels lay values out by the call's size, so the draws come in fixed-size calls)."""
    from aprkit.augment.single import sample_single_params

    g = torch.Generator(DEVICE)
    draws = {n: sample_single_params(n, generator=g.manual_seed(3)) for n in (4, 8, 300)}
    for k, v in draws[4].items():
        on_device(v)
        assert torch.equal(v, draws[8][k][:4]) and torch.equal(v, draws[300][k][:4]), k
    assert torch.equal(draws[8]["op1"], draws[300]["op1"][:8])


def test_aprsp_on_device(xf: torch.Tensor) -> None:
    y = torch.arange(xf.shape[0])
    x_cpu, y_cpu = APRSP(p=1.0, seed=0)(xf, y)
    x_dev, y_dev = APRSP(p=1.0, seed=0)(xf.to(DEVICE), y.to(DEVICE))
    assert x_dev.shape == (2 * xf.shape[0], *xf.shape[1:])
    assert_images_close(x_dev, x_cpu)
    assert torch.equal(y_dev.cpu(), y_cpu)
    logits = torch.randn(x_dev.shape[0], 10, generator=cpu_gen()).to(DEVICE)
    assert torch.isfinite(APRSP.loss(logits, y_dev))


@pytest.mark.parametrize("mode", ["swap", "mix"])
def test_feature_apr_matches_cpu(mode: str) -> None:
    feats = torch.randn(4, 8, 6, 6, generator=cpu_gen(1))
    tokens = torch.randn(4, 1 + 16, 12, generator=cpu_gen(2))
    for f, kw in ((feats, {}), (tokens, {"num_prefix_tokens": 1})):
        cpu = FeatureAPR(p=1.0, mode=mode, generator=cpu_gen(), **kw).train()(f)
        mod = FeatureAPR(p=1.0, mode=mode, generator=cpu_gen(), **kw).train()
        fd = f.to(DEVICE, copy=True).requires_grad_(True)
        dev = mod(fd)
        assert_images_close(dev.detach(), cpu, atol=1e-4)
        dev.square().sum().backward()
        assert torch.isfinite(fd.grad).all()


# --------------------------------------------------------------------------------------------- evaluate / train
def test_evaluate_on_device_amp_channels_last() -> None:
    from aprkit.eval import evaluate
    from aprkit.eval.engine.datasets import TensorImageDataset

    images = natural_images(48, 32, seed=12)
    net = TinyNet().calibrate(images.float() / 255)
    with torch.no_grad():
        labels = net(images.float() / 255).argmax(1)  # the CPU's own predictions: clean accuracy 1 on the CPU
    assert labels.unique().numel() >= 4
    data = TensorImageDataset(images, labels)
    kw = dict(suite="corruption", data=data, corruptions=["fog", "gaussian_noise"], severities=[1, 3],
              batch_size=16, progress=False, report=False, model_id="tiny")
    ref = evaluate(copy.deepcopy(net), device="cpu", amp=False, channels_last=False, **kw)["corruption"]
    for amp, tol in ((False, 4 / 48), (True, 6 / 48)):  # a few near-ties may flip (TF32 / fp16 convolutions)
        res = evaluate(copy.deepcopy(net), device=DEVICE, amp=amp, channels_last=True, **kw)["corruption"]
        assert abs(res["clean"]["accuracy"] - ref["clean"]["accuracy"]) <= tol
        for c, cells in ref["cells"].items():
            for s, cell in cells.items():
                assert abs(res["cells"][c][s]["accuracy"] - cell["accuracy"]) <= tol, (amp, c, s)


def test_evaluate_stacked_c_file_on_device(tmp_path) -> None:
    """A -C file's five severities read in one pass on the device (batches straddle severities) give each cell the
    CPU's numbers, and queued one pass ahead the cells come back in grid order."""
    import numpy as np

    from aprkit.eval import evaluate
    from aprkit.eval.engine.datasets import TensorImageDataset

    images = natural_images(20, 32, seed=13)
    net = TinyNet().calibrate(images.float() / 255)
    with torch.no_grad():
        labels = net(images.float() / 255).argmax(1)
    hwc = images.permute(0, 2, 3, 1).numpy()
    for k, c in enumerate(["fog", "contrast"]):
        np.save(tmp_path / f"{c}.npy", np.concatenate([np.clip(hwc.astype(np.int16) + (12 * s - 30) * (k + 1), 0, 255)
                                                       .astype(np.uint8) for s in range(1, 6)]))
    np.save(tmp_path / "labels.npy", np.tile(labels.numpy(), 5).astype(np.int64))
    kw = dict(suite="corruption", data=TensorImageDataset(images, labels), corrupted=f"cifar10-c:{tmp_path}",
              corruptions=["fog", "contrast"], batch_size=16, progress=False, report=False, model_id="tiny")
    ref = evaluate(copy.deepcopy(net), device="cpu", amp=False, channels_last=False, **kw)["corruption"]
    res = evaluate(copy.deepcopy(net), device=DEVICE, amp=False, channels_last=True, **kw)["corruption"]
    assert list(res["cells"]) == ["fog", "contrast"] and all(list(v) == list("12345") for v in res["cells"].values())
    for c, cells in ref["cells"].items():
        for s, cell in cells.items():
            assert abs(res["cells"][c][s]["accuracy"] - cell["accuracy"]) <= 2 / 20, (c, s)
            assert res["cells"][c][s]["n"] == 20

def test_predictions_queued_back_to_back_match_cpu(monkeypatch) -> None:
    """start_predict queues a dataset's batches and asynchronous copies of its outputs to pinned host memory (no
    host sync); the next dataset is queued before the first's result is read, as the corruption suite does. Small
    FLUSH_ROWS: several copies per dataset. NaN logits still raise, when the result is read."""
    import aprkit.eval.engine.inference as inference
    from aprkit.eval.engine.datasets import TensorImageDataset

    monkeypatch.setattr(inference, "FLUSH_ROWS", 16)
    net = TinyNet().calibrate(natural_images(8, 32, seed=3).float() / 255)
    sets = [TensorImageDataset(natural_images(40, 32, seed=s), torch.arange(40) % 4) for s in (30, 31)]
    first = inference.start_predict(copy.deepcopy(net).to(DEVICE), sets[0], device=DEVICE, batch_size=8,
                                    features=True)
    second = inference.start_predict(copy.deepcopy(net).to(DEVICE), sets[1], device=DEVICE, batch_size=8,
                                     features=True)
    for pending, ds in ((first, sets[0]), (second, sets[1])):
        got, ref = pending.result(), inference.predict(net, ds, batch_size=8, features=True)
        assert got.logits.device.type == "cpu" and got.labels.equal(ref.labels)
        torch.testing.assert_close(got.logits, ref.logits, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(got.features, ref.features, atol=1e-3, rtol=1e-3)
        assert pending.result() is got

    class Nan(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 4), float("nan"), device=x.device)

    pending = inference.start_predict(Nan(), sets[0], device=DEVICE, batch_size=8)
    with pytest.raises(ValueError, match="NaN or infinite logits for 40 of 40"):
        pending.result()


def test_train_step_on_device_amp_channels_last() -> None:
    from aprkit.train.config import load_config
    from aprkit.train.recipe import DeviceAugment, method_loss

    cfg = load_config(None, ["aug.method=apr_sp", "model.name=small_cnn", "aug.compile=false"])  # compiling: below
    cuda = DEVICE.type == "cuda"
    aug = DeviceAugment(cfg, DEVICE, torch.Generator(DEVICE).manual_seed(0), channels_last=True)
    model = TinyNet().to(DEVICE).to(memory_format=torch.channels_last).train()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # fp16's default initial scale 65536 overflows this tiny net's gradients: every step would be skipped
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**8, enabled=cuda)
    x8 = natural_images(8, 32, seed=13).to(DEVICE)
    y = torch.arange(8, device=DEVICE) % 10
    skipped = 0
    for _ in range(3):
        x, yy = aug.inputs(x8, y)
        assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
        with torch.autocast(DEVICE.type, enabled=cuda):
            loss, logits, labels = method_loss(model, x, yy, "apr_sp")
        assert torch.isfinite(loss) and logits.shape == (8, 10)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scale = scaler.get_scale() if cuda else 1.0
        scaler.step(opt)
        scaler.update()
        skipped += int(cuda and scaler.get_scale() < scale)  # the scale drops exactly when a step was skipped
    assert skipped <= 1, f"{skipped} of 3 optimiser steps skipped for inf/NaN fp16 gradients"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_fit_two_steps_on_device(amp_dtype: str) -> None:
    from aprkit.eval.engine.datasets import TensorImageDataset
    from aprkit.train import fit

    data = TensorImageDataset(natural_images(32, 32, seed=14), torch.arange(32) % 10)
    overrides = ["model.name=small_cnn", "aug.method=apr_sp", "data.input_path=gpu", "optim.batch_size=8",
                 "optim.epochs=1", "optim.milestones=[]", "train.max_steps=2", "train.eval_every=0",
                 "train.progress=false", "train.tensorboard=false", "data.num_workers=0", f"train.device={DEVICE}",
                 f"train.amp_dtype={amp_dtype}", "aug.compile=false"]  # a cold compile costs ~30 s: its own test
    result = fit({}, overrides, datasets=(data, None))
    assert result["global_step"] == 2
    assert all(torch.isfinite(p).all() for p in result["model"].parameters())


def test_aug_compile_step_inputs_match_eager_on_device() -> None:
    """Issues 13/17: ``aug.compile`` compiles a training step's whole augmentation as one graph (on CUDA: inductor
    with CUDA graphs, ``reduce-overhead``); the APR-SP ``2B`` batch matches eager's (APR-S rounds to uint8: a rare
    one-level flip)."""
    from aprkit.train.config import load_config
    from aprkit.train.recipe import DeviceAugment

    torch._dynamo.reset()
    options = "{mode: reduce-overhead}" if DEVICE.type == "cuda" else "{backend: aot_eager}"
    augs = [DeviceAugment(load_config(None, ["aug.method=apr_sp", "model.name=small_cnn", "aug.pair_p=1.0",
                                             f"aug.compile={spec}"]),
                          DEVICE, torch.Generator(DEVICE).manual_seed(2), channels_last=True)
            for spec in (options, "false")]
    assert augs[0].compile_core and augs[0].plan.single is not None and augs[0].plan.pair == "two"
    x8, y = natural_images(8, 32, seed=17).to(DEVICE), torch.arange(8, device=DEVICE)
    for _ in range(4):  # reduce-overhead: warm-up, capture, then replays
        (got, gy), (want, wy) = (aug.inputs(x8, y) for aug in augs)
        assert got.is_contiguous(memory_format=torch.channels_last) and torch.equal(gy, wy)
        assert_images_close(got[:8], want[:8].cpu(), atol=1.01 / 255, frac=1e-3)
        assert_images_close(got[8:], want[8:].cpu(), atol=1e-3, frac=1e-2)
    assert augs[0]._core is not None
    torch._dynamo.reset()


# --------------------------------------------------------------------------------------------- transplant
def test_transplant_test_on_device_matches_cpu() -> None:
    """The internal Oppenheim-Lim test with the model on the device: the phase and sign codes (whose bins without
    phase take phase 0) and the controls agree with the CPU (a first GPU run of study 3 stopped here: a CPU
    scalar went into the device's spectrum)."""
    from aprkit.eval.analyses.transplant import transplant_test

    x = natural_images(24, 32, seed=5).float() / 255
    model = TinyNet().calibrate(x)
    kw = {"code": ("phase", "sign"), "n_pairs": 40, "n_control": 24}
    cpu = transplant_test(copy.deepcopy(model), x, ["c1", "c2"], generator=cpu_gen(3), **kw)
    dev = transplant_test(copy.deepcopy(model).to(DEVICE), x, ["c1", "c2"], generator=cpu_gen(3), **kw)
    assert [(r["layer"], r["code"]) for r in dev["rows"]] == [(r["layer"], r["code"]) for r in cpu["rows"]]
    for d, c in zip(dev["rows"], cpu["rows"]):
        assert d["identity_agreement"] == 1.0
        for key in ("follow_donor", "follow_magnitude", "deletion_agreement", "dc_only_agreement"):
            assert abs(d[key] - c[key]) <= 0.05, (d["layer"], d["code"], key, d[key], c[key])  # near-ties may flip

