"""Training loop: loss goes down, every method and input path runs, checkpoints load (resume: test_train_resume.py,
DDP: test_train_distributed.py)."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from conftest import natural_images
from torch import nn
from train_common import HAS_AUGMENT
from train_common import Images as _Images
from train_common import train_config as _config

from aprkit.train import fit, jsd_loss, random_crop, random_hflip
from aprkit.train.batch_ops import crop_offsets

pytestmark = pytest.mark.usefixtures("one_thread")


def test_batch_ops_shapes_determinism_and_identity(images_u8):
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = random_crop(images_u8, 32, padding=4, generator=g())
    assert a.shape == images_u8.shape and a.dtype == torch.uint8
    assert torch.equal(a, random_crop(images_u8, 32, padding=4, generator=g()))
    assert torch.equal(random_crop(images_u8, 32, padding=0, generator=g()), images_u8)
    f = random_hflip(images_u8.float(), p=1.0, generator=g())
    assert torch.equal(f, images_u8.float().flip(-1))
    with pytest.raises(ValueError, match="larger than the padded image"):
        random_crop(images_u8, 48, padding=4)
    with pytest.raises(TypeError, match="torch.Tensor"):
        random_crop(images_u8.numpy(), 32)
    with pytest.raises(ValueError, match="p must be in"):
        random_hflip(images_u8, p=1.5)


def test_batch_ops_draw_per_image_and_check_fill_and_size(images_u8):
    """Crop offsets and flips come from one row of uniforms per image (reviewer: every top offset was drawn, then every
    left offset, so image i's left offset depended on the batch size); a fill is a grey level 0..255 (0.5 on a float
    batch padded with 0.5 / 255, a tuple failed inside a division); the input's memory format is kept."""
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    x = images_u8[:6]
    for n in (1, 2, 5):
        assert torch.equal(random_crop(x[:n], 32, 4, generator=g()), random_crop(x, 32, 4, generator=g())[:n])
        assert torch.equal(random_hflip(x[:n], generator=g()), random_hflip(x, generator=g())[:n])
    oy, ox = crop_offsets(4000, 9, 3, g(), torch.device("cpu"))
    assert oy.bincount().tolist() == pytest.approx([4000 / 9] * 9, rel=0.15) and set(ox.tolist()) == {0, 1, 2}
    xf = x.float() / 255
    assert float(random_crop(xf[:1], 40, 4, fill=128)[0, 0, 0, 0]) == pytest.approx(128 / 255)
    with pytest.raises(ValueError, match="pass 128 for 0.5 on the \\[0, 1\\] scale"):
        random_crop(xf, 32, 4, fill=0.5)
    assert int(random_crop(x[:1], 40, 4, fill=0.5)[0, 0, 0, 0]) in (0, 1)  # uint8: a level, however small
    with pytest.raises(ValueError, match="grey level in 0..255"):
        random_crop(x, 32, 4, fill=300)
    with pytest.raises(TypeError, match="fill must be one grey level 0..255 .*got tuple"):
        random_crop(x, 32, 4, fill=(1, 2, 3))
    with pytest.raises(TypeError, match="size must be an int"):
        random_crop(x, (32, 32), 4)
    cl = x.contiguous(memory_format=torch.channels_last)
    out = random_crop(cl, 32, 4, generator=g())
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out, random_crop(x, 32, 4, generator=g()))


def test_jsd_is_zero_for_identical_predictions():
    z = torch.randn(5, 7)
    assert float(jsd_loss(z, z, z)) == pytest.approx(0.0, abs=1e-6)
    assert float(jsd_loss(z, -z, z)) > 0


def test_smoke_run_lowers_the_loss_on_a_fixed_batch():
    ds = _Images(16)
    cfg = _config(data={"crop_padding": 0, "hflip": False}, optim={"batch_size": 16, "epochs": 20, "lr": 0.05,
                                                                     "milestones": []},
                  train={"eval_every": 0})
    result = fit(cfg, datasets=(ds, None))
    losses = [row["train_loss"] for row in result["history"]]
    assert len(losses) == 20 and result["global_step"] == 20
    assert losses[-1] < 0.5 * losses[0]


def test_outputs_and_checkpoint_read_by_load_model(tmp_path):
    from aprkit.models import load_model

    ds = _Images(24)
    result = fit(_config(optim={"epochs": 1}), out=tmp_path, datasets=(ds, ds))
    for name in ("config.yaml", "last.pt", "metrics.csv", "metrics.json", "model.pt"):
        assert (tmp_path / name).is_file(), name
    assert not list(tmp_path.glob("*.tmp"))
    model = load_model(tmp_path / "model.pt")
    x = ds.x[:4].float() / 255
    assert torch.allclose(model(x), result["model"].eval()(x))
    assert 0.0 <= result["final"]["test_acc"] <= 1.0
    # the resumable state loads weights-only too (aprkit eval --checkpoint last.pt during or after a stopped run):
    # its NumPy random state is stored as a tensor, and load_model builds the model its config names
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert isinstance(state["rng"]["numpy"][1], torch.Tensor)
    for last in (load_model(tmp_path / "last.pt"), load_model("_tiny_test_cnn", checkpoint=tmp_path / "last.pt")):
        assert torch.equal(last(x), model(x)) and not last.training
    with pytest.raises(ValueError, match="holds a '_tiny_test_cnn' model, not 'resnet20'"):
        load_model("resnet20", checkpoint=tmp_path / "last.pt")


def test_numpy_random_state_survives_the_checkpoint_round_trip():
    import numpy as np

    from aprkit.train.state import capture_rng, restore_rng

    np.random.seed(7)
    np.random.rand(3)
    state = capture_rng()
    want = np.random.rand(5)
    np.random.seed(0)
    restore_rng(state)
    assert np.array_equal(np.random.rand(5), want)
    old = dict(state, numpy=np.random.get_state())  # a checkpoint of an older aprkit: the NumPy array itself
    want = np.random.rand(2)
    restore_rng(old)
    assert np.array_equal(np.random.rand(2), want)


@pytest.mark.parametrize("path", ["gpu", "loader"])
@pytest.mark.parametrize("with_tensors", [True, False])
def test_input_paths_run(path, with_tensors):
    ds = _Images(16, with_tensors=with_tensors)
    res = fit(_config(data={"input_path": path}), ["optim.epochs=1"], datasets=(ds, ds))
    assert res["global_step"] == 2 and res["final"]["test_n"] == 16


def test_augmix_jsd_runs():
    ds = _Images(16)
    res = fit(_config(aug={"method": "augmix_jsd"}), ["optim.epochs=1"], datasets=(ds, None))
    assert res["global_step"] == 2 and res["final"]["train_loss"] > 0


@pytest.mark.skipif(not HAS_AUGMENT, reason="aprkit.augment (APRPair/APRSingle/APRSingleBatch) not available")
@pytest.mark.parametrize("method", ["apr_p", "apr_p_only", "apr_s", "apr_sp"])
@pytest.mark.parametrize("path", ["gpu", "loader"])
def test_apr_methods_run_and_are_deterministic(method, path):
    ds = _Images(16)
    cfg = _config(aug={"method": method, "pair_p": 1.0, "single_p": 1.0}, data={"input_path": path})
    a = fit(cfg, ["optim.epochs=1"], datasets=(ds, None))
    b = fit(cfg, ["optim.epochs=1"], datasets=(ds, None))
    assert a["global_step"] == 2
    sa, sb = a["model"].state_dict(), b["model"].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_too_small_dataset_and_bad_config():
    with pytest.raises(ValueError, match="fewer than one batch"):
        fit(_config(optim={"batch_size": 64}), datasets=(_Images(8), None))
    with pytest.raises(TypeError, match="config must be"):
        fit(42)  # type: ignore[arg-type]


def test_cli_train_refuses_an_output_folder_inside_its_image_folder(tmp_path, capsys):
    """Its figures and checkpoints would be read as a class of the data by the next run (diff reviewer)."""
    from PIL import Image

    from aprkit.cli import main

    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / c / "0.png")
    rc = main(["train", "--out", str(tmp_path / "data" / "run"), "--set", f"data.dataset=folder:{tmp_path / 'data'}",
               "optim.epochs=1"])
    assert rc == 2 and "lies inside the input folder" in capsys.readouterr().err
    assert not (tmp_path / "data" / "run").exists()


def test_cli_train_on_synthetic_data(tmp_path, capsys):
    from aprkit.cli import main

    rc = main(["train", "--out", str(tmp_path), "--set", "model.name=_tiny_test_cnn", "data.dataset=synthetic:64",
               "optim.batch_size=16", "optim.epochs=1", "data.test_limit=32", "data.num_workers=0",
               "train.progress=false", "train.max_steps=2"])
    assert rc == 0
    assert (tmp_path / "model.pt").is_file()
    assert main(["train", "--set", "optim.learning_rate=1"]) == 2
    assert "valid keys in optim" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none")]) == 2  # the defaults alone: 200 epochs of synthetic data
    assert "no --config: give a recipe" in capsys.readouterr().err and not (tmp_path / "none").exists()
    args = ["train", "--out", str(tmp_path), "--set", "model.name=_tiny_test_cnn", "data.dataset=synthetic:64",
            "optim.batch_size=16", "optim.epochs=1", "data.test_limit=32", "data.num_workers=0", "train.progress=false",
            "train.max_steps=1"]
    before = (tmp_path / "model.pt").read_bytes()
    assert main(args) == 2  # the same --out again: refused, nothing touched
    err = capsys.readouterr().err
    assert "already holds a training run (last.pt, model.pt" in err and "--resume" in err and "--overwrite" in err
    assert (tmp_path / "model.pt").read_bytes() == before
    assert main(args + ["--resume", "--overwrite"]) == 2 and "contradict" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert (tmp_path / "model.pt").read_bytes() != before


def test_a_model_pt_that_no_run_wrote_is_neither_a_run_nor_deleted(tmp_path):
    """A stray model.pt made the folder "a training run": --resume failed (no last.pt) and the suggested --overwrite
    deleted the user's file (demo/train tester)."""
    from aprkit.train.state import RunExistsError

    (tmp_path / "model.pt").write_bytes(b"mine")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(RunExistsError, match="holds a model.pt without a run's last.pt or metrics"):
            fit(_config(optim={"epochs": 1}), out=tmp_path, datasets=(_Images(16), None), **flags)
    assert (tmp_path / "model.pt").read_bytes() == b"mine"


def test_an_existing_run_is_refused_unless_resume_or_overwrite(tmp_path):
    from aprkit.train.state import RunExistsError

    ds = _Images(16)
    cfg = _config(optim={"epochs": 1})
    fit(cfg, out=tmp_path, datasets=(ds, None))
    kept = {n: (tmp_path / n).read_bytes() for n in ("last.pt", "model.pt", "metrics.csv", "metrics.json", "config.yaml")}
    with pytest.raises(RunExistsError, match=r"already holds a training run \(last\.pt, model\.pt, metrics\.csv.*--resume.*--overwrite"):
        fit(cfg, ["optim.lr=0.01"], out=tmp_path, datasets=(ds, None))
    assert {n: (tmp_path / n).read_bytes() for n in kept} == kept  # not a byte changed
    with pytest.raises(ValueError, match="contradict"):
        fit(cfg, out=tmp_path, resume=True, overwrite=True, datasets=(ds, None))
    # a finished run resumed (here with another device setting, as when a GPU run is re-evaluated on the CPU)
    # reaches the same end and keeps the config and model files that trained it, byte for byte
    resumed = fit(cfg, ["train.threads=1"], out=tmp_path, resume=True, datasets=(ds, None))
    assert resumed["global_step"] == 2 and resumed["checkpoint"] == str(tmp_path / "model.pt")
    assert {n: (tmp_path / n).read_bytes() for n in ("model.pt", "config.yaml")} == {
        n: kept[n] for n in ("model.pt", "config.yaml")}
    (tmp_path / "tb").mkdir(exist_ok=True)
    (tmp_path / "notes.txt").write_text("mine")
    again = fit(cfg, ["optim.lr=0.01", "optim.epochs=2"], out=tmp_path, overwrite=True, datasets=(ds, None))
    assert again["global_step"] == 4 and again["history"][0]["lr"] == 0.01
    assert [r["epoch"] for r in json.loads((tmp_path / "metrics.json").read_text())] == [1, 2]
    assert not (tmp_path / "tb").exists() and (tmp_path / "notes.txt").read_text() == "mine"  # only run files go
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("a folder without run files is fine")
    assert fit(cfg, out=tmp_path / "elsewhere", datasets=(ds, None))["global_step"] == 2


def test_data_limit_caps_both_splits_unless_test_limit_is_set():
    """The README smoke run (``data.limit=256``) must not evaluate the whole 10,000-image test set."""
    from aprkit.train.config import config_from_dict, validate_config
    from aprkit.train.data import load_datasets

    def sizes(**data) -> tuple[int, int]:
        train, test = load_datasets(validate_config(config_from_dict({"data": {"dataset": "synthetic:64", **data}})))
        return len(train), len(test)

    assert sizes() == (64, 64)
    assert sizes(limit=16) == (16, 16)
    assert sizes(limit=16, test_limit=8) == (16, 8)
    assert sizes(limit=16, test_limit=10**6) == (16, 64)  # a test_limit above the test set: all of it
    res = fit({"model": {"name": "_tiny_test_cnn"}, "data": {"dataset": "synthetic:64", "limit": 16, "num_workers": 0},
               "optim": {"batch_size": 8, "epochs": 1}, "train": {"progress": False, "tensorboard": False}})
    assert res["final"]["test_n"] == 16 and res["global_step"] == 2


@pytest.mark.slow
def test_readme_smoke_command_on_cifar10(tmp_path, monkeypatch, cifar10_dir):
    """The README's smoke command as written (real CIFAR-10): 5 steps, 256 test images, not 10,000."""
    import shlex
    from pathlib import Path

    from aprkit.cli import main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("aprkit train") and "runs/smoke" in ln]
    args = [str(tmp_path / "smoke") if a == "runs/smoke" else a for a in shlex.split(line, comments=True)[1:]]
    monkeypatch.setenv("APRKIT_DATA", str(cifar10_dir.parent))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the config path is relative to the repository
    assert main(args + ["--set", "train.progress=false", "train.tensorboard=false"]) == 0
    rows = json.loads((tmp_path / "smoke" / "metrics.json").read_text())
    assert rows[-1]["step"] == 5 and rows[-1]["test_n"] == 256


def test_lr_schedule_multistep_and_warmup():
    from aprkit.train.loop import lr_factor

    f = lr_factor([2, 4], 0.2, 0.0, steps_per_epoch=10)
    assert [f(s) for s in (0, 19, 20, 39, 40, 99)] == pytest.approx([1, 1, 0.2, 0.2, 0.04, 0.04])
    w = lr_factor([2], 0.1, 0.5, steps_per_epoch=10)  # 5 warm-up steps
    assert [w(s) for s in (0, 4, 5, 20)] == pytest.approx([0.2, 1.0, 1.0, 0.1])


def test_cosine_schedule_follows_augmix():
    """AugMix's cifar.py: LambdaLR(get_lr(step, epochs * len(loader), 1, 1e-6 / lr)), a cosine per step from 1 to
    1e-6 / lr (the AugMix config trained the APR tables' step schedule, 200 epochs and grey padding before)."""
    import math
    from pathlib import Path

    from aprkit.train.config import load_config
    from aprkit.train.loop import lr_factor

    floor, total = 1e-6 / 0.1, 1000
    augmix = [floor + (1 - floor) * 0.5 * (1 + math.cos(s / total * math.pi)) for s in (0, 250, 500, 999, 1000)]
    f = lr_factor([60], 0.2, 0.0, steps_per_epoch=10, cosine_steps=total, floor=floor)
    assert [f(s) for s in (0, 250, 500, 999, 1000)] == pytest.approx(augmix, rel=1e-12)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "train" / "cifar10_wrn40_2_augmix_jsd.yaml")
    assert (cfg.optim.schedule, cfg.optim.min_lr, cfg.optim.epochs, cfg.data.pad_fill) == ("cosine", 1e-6, 100, 0)
    with pytest.raises(ValueError, match="min_lr=0.001 is the cosine schedule's"):  # not silently ignored
        load_config(Path(__file__).resolve().parents[1] / "configs" / "train" / "cifar10_resnet18_standard.yaml",
                    overrides=["optim.min_lr=0.001"])


@pytest.mark.skipif(not HAS_AUGMENT, reason="aprkit.augment not available")
def test_shipped_recipe_runs_as_a_smoke_run(tmp_path):
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "configs" / "train" / "cifar10_allconv_apr_sp.yaml"
    res = fit(cfg, ["data.dataset=synthetic:64", "data.test_limit=16", "train.max_steps=2", "optim.batch_size=16",
                    "data.num_workers=0", "train.progress=false"], out=tmp_path)
    assert res["global_step"] == 2 and res["config"]["aug"]["method"] == "apr_sp"
    assert res["config"]["optim"]["milestones"] == [60, 120, 160, 190]


def _device_augment(method: str, seed: int, compile_core: object = False):
    from aprkit.train.config import config_from_dict
    from aprkit.train.recipe import DeviceAugment

    cfg = config_from_dict(_config(aug={"method": method, "pair_p": 0.6, "single_p": 0.7, "compile": compile_core},
                                   data={"input_path": "gpu"}))
    return DeviceAugment(cfg, torch.device("cpu"), torch.Generator().manual_seed(seed), channels_last=True)


@pytest.mark.skipif(not HAS_AUGMENT, reason="aprkit.augment not available")
@pytest.mark.parametrize("method", ["apr_p", "apr_p_only", "apr_sp"])
def test_device_augment_is_the_augment_classes_in_sequence(method):
    """A training step's inputs are APRSingleBatch -> crop/flip -> float -> APRPair / APRSP, draw for draw."""
    from aprkit.augment import APRSP, APRPair, APRSingleBatch
    from aprkit.train.batch_ops import to_float

    aug = _device_augment(method, seed=4)
    x8, y = natural_images(8, 16, seed=21), torch.arange(8) % 4
    g = torch.Generator().manual_seed(4)
    single = APRSingleBatch(p=0.7, severity=3, generator=g) if method == "apr_sp" else None
    pair = APRPair(p=0.6, generator=g) if method == "apr_p_only" else APRSP(p=0.6, generator=g)
    both = _device_augment(method, seed=4)
    for _ in range(4):  # p=0.6: both the recombined and the untouched batch occur
        got_x, got_y = aug.pair(aug(x8), y)
        x = single(x8) if single is not None else x8
        x = to_float(random_hflip(random_crop(x, 16, 2, 0, generator=g), generator=g), True)
        want_x, want_y = (pair(x), y) if method == "apr_p_only" else pair(x, y)
        torch.testing.assert_close(got_x, want_x, atol=0, rtol=0)
        assert torch.equal(got_y, want_y) and got_x.is_contiguous(memory_format=torch.channels_last)
        step_x, step_y = both.inputs(x8, y)  # the whole step at once: every draw first, the same numbers
        torch.testing.assert_close(step_x, want_x, atol=0, rtol=0)
        assert torch.equal(step_y, want_y) and step_x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not HAS_AUGMENT, reason="aprkit.augment not available")
@pytest.mark.parametrize("method", ["apr_p", "apr_p_only"])
def test_pair_space_normalized_recombines_the_images_the_model_sees(method):
    """aug.pair_space: normalized is the reference's ImageNet mix_data (its loader normalises first): APR-P of
    (x - mean) / std, handed back in pixels; the clean half is the batch as it came. A recombined image keeps the
    sign of its own brightness against the mean (in pixels it took its partner's)."""
    from aprkit.augment import APRPair
    from aprkit.augment.functional import apr_pair
    from aprkit.train.config import config_from_dict
    from aprkit.train.loop import build_model, input_stats
    from aprkit.train.recipe import DeviceAugment

    cfg = config_from_dict(_config(aug={"method": method, "pair_p": 1.0, "pair_space": "normalized"},
                                   data={"input_path": "gpu"}, model={"name": "small_cnn", "num_classes": 4}))
    mean, std = input_stats(build_model(cfg))
    assert mean.shape == std.shape == (3, 1, 1)
    aug = DeviceAugment(cfg, torch.device("cpu"), torch.Generator().manual_seed(5), input_stats=(mean, std))
    x, y = natural_images(8, 16, seed=23).float() / 255, torch.arange(8) % 4
    got, got_y = aug.pair(x, y)
    perm = APRPair(p=1.0, generator=torch.Generator().manual_seed(5)).generate_parameters(x.shape)["perm"]
    mixed = apr_pair((x - mean) / std, perm) * std + mean
    want = mixed if method == "apr_p_only" else torch.cat([x, mixed])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert torch.equal(got_y, y if method == "apr_p_only" else torch.cat([y, y]))
    if method == "apr_p":
        assert torch.equal(got[:8], x)  # no round trip through the normalisation
    pixels = apr_pair(x, perm)
    assert not torch.allclose(pixels, mixed, atol=1e-3)  # the two spaces differ (the DC bins)
    with pytest.raises(ValueError, match="pair_space: normalized with an APR-P method takes the model's mean and std"):
        DeviceAugment(cfg, torch.device("cpu"), torch.Generator())
    with pytest.raises(ValueError, match="holds no mean/std buffers"):
        input_stats(torch.nn.Linear(2, 2))
    ran = fit(cfg.to_dict() | {"train": {**cfg.to_dict()["train"], "max_steps": 2}}, datasets=(_Images(16), None))
    assert ran["global_step"] == 2
    with pytest.raises(ValueError, match="holds no mean/std buffers"):
        fit(_config(aug={"method": method, "pair_space": "normalized"}), datasets=(_Images(16), None))
    # without APR-P the setting does nothing: no mean/std needed (the ImageNet config with --set aug.method=standard)
    plain = fit(_config(aug={"method": "standard", "pair_space": "normalized"}, train={"max_steps": 1}),
                datasets=(_Images(16), None))
    assert plain["global_step"] == 1


@pytest.mark.skipif(not HAS_AUGMENT, reason="aprkit.augment not available")
@pytest.mark.parametrize("method", ["apr_p", "apr_p_only", "apr_sp"])
def test_aug_compile_compiles_the_whole_step_with_eager_numbers(method):
    """``aug.compile`` traces a step's whole augmentation as one graph (fullgraph: no break, no host sync) that takes
    the step's draws as inputs: the same numbers as eager, step after step."""
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    options = {"backend": "eager"}  # a compiled graph (fullgraph=True) without a C compiler
    compiled, eager = _device_augment(method, 6, options), _device_augment(method, 6)
    assert compiled.compile_core == options and eager.compile_core is False
    x8, y = natural_images(8, 16, seed=22), torch.arange(8) % 4
    for _ in range(3):
        a, b = compiled.inputs(x8, y), eager.inputs(x8, y)
        torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)
        assert torch.equal(a[1], b[1])
    assert compiled._core is not None and eager._core is None  # the compiled graph ran
    assert counters["stats"]["unique_graphs"] == 1  # the draws' buffers stay: no recompile from step to step
    assert _device_augment("standard", 6, options).compile_core is False  # no APR: crop and flip stay eager
    torch._dynamo.reset()


def test_aug_compile_config_values():
    from aprkit.train.config import load_config

    assert load_config(None, ["aug.compile={mode: reduce-overhead}"]).aug.compile == {"mode": "reduce-overhead"}
    assert load_config(None, ["aug.compile=true"]).aug.compile is True
    assert load_config(None).aug.compile == "auto"
    from aprkit.train.config import resolve_amp_dtype, resolve_aug_compile

    assert resolve_aug_compile("auto", torch.device("cpu")) is False
    assert resolve_aug_compile("auto", torch.device("cuda")) == {"mode": "reduce-overhead"}
    assert resolve_aug_compile(False, torch.device("cuda")) is False
    assert resolve_amp_dtype("auto", torch.device("cpu")) == torch.float16
    assert resolve_amp_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="aug.compile must be true, false, auto or a mapping"):
        load_config(None, ["aug.compile=maybe"])
    with pytest.raises(ValueError, match="unknown torch.compile option 'mdoe' \\(did you mean 'mode'"):
        load_config(None, ["aug.compile={mdoe: reduce-overhead}"])
    with pytest.raises(ValueError, match="aug.compile must be true, false, auto or a mapping.*got '3'"):
        load_config(None, ["aug.compile=3"])


def test_restore_rng_from_another_device_type_warns_and_keeps_going():
    """A run trained on CUDA resumes (or is re-evaluated) on the CPU: the step generator's CUDA state (16 bytes)
    does not fit a CPU generator; it is skipped with a warning (the loop reseeds it every step)."""
    import torch

    from aprkit.train.state import capture_rng, restore_rng

    gen = torch.Generator().manual_seed(1)
    state = capture_rng(gen)
    state["generator"] = torch.zeros(16, dtype=torch.uint8)  # the size of a CUDA (Philox) generator state
    before = gen.get_state().clone()
    with pytest.warns(RuntimeWarning, match="another device type"):
        restore_rng(state, gen)
    assert torch.equal(gen.get_state(), before)
    state = capture_rng(torch.Generator().manual_seed(2))
    restore_rng(state, gen)
    assert torch.equal(gen.get_state(), state["generator"])


@pytest.mark.skipif(not HAS_AUGMENT, reason="aprkit.augment not available")
def test_apr_sp_separate_forward_normalises_each_half_on_its_own():
    """``aug.sp_forward: separate`` runs the clean and APR-P halves through the model one after the other (batch norm
    statistics per half); ``joint`` (the default) runs the 2B batch once. Same inputs, same loss formula."""
    from aprkit.train.config import load_config
    from aprkit.train.recipe import method_loss

    x8, y = natural_images(8, 16, seed=23), torch.arange(8) % 4
    calls: dict[str, list[int]] = {}
    out = {}
    for mode in ("joint", "separate"):
        aug = _device_augment("apr_sp", seed=5)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(4))
        model.register_forward_pre_hook(lambda m, args, mode=mode: calls.setdefault(mode, []).append(args[0].shape[0]))
        out[mode] = method_loss(model, *aug.inputs(x8, y), "apr_sp", sp_forward=mode)
    assert calls == {"joint": [16], "separate": [8, 8]}
    assert out["joint"][1].shape == out["separate"][1].shape == (8, 4)
    assert not torch.allclose(out["joint"][0], out["separate"][0])  # batch statistics differ
    assert load_config(None).aug.sp_forward == "joint"
    with pytest.raises((TypeError, ValueError), match="sp_forward"):
        load_config(None, ["aug.sp_forward=both"])


@pytest.mark.parametrize("method", ["apr_p", "apr_sp"])
def test_two_batch_loss_is_aprsp_loss_in_one_pass(method):
    """A training step's loss on the 2B batch is APRSP.loss (CE of each half, summed), computed as one cross-entropy
    over 2B times 2 (halves of equal size); accuracy is measured on the clean half."""
    from aprkit.augment import APRSP
    from aprkit.train.recipe import method_loss

    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (8,), generator=g)
    y_all = torch.cat([y, y])
    loss, first, labels = method_loss(lambda x: logits, torch.zeros(16, 3, 4, 4), y_all, method)
    torch.testing.assert_close(loss, APRSP.loss(logits, y_all), rtol=1e-12, atol=0)
    assert torch.equal(first, logits[:8]) and torch.equal(labels, y)


def test_fit_gives_the_process_its_backend_flags_back(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A CUDA run sets cuDNN autotuning / deterministic algorithms for itself; fit restores the caller's settings
    afterwards (also when the run fails), so an evaluation in the same process is not affected."""
    loop = importlib.import_module("aprkit.train.loop")

    def fake_fit(*args, **kwargs):  # what _fit does on a CUDA device, then a failure
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, True
        torch.use_deterministic_algorithms(True, warn_only=True)
        raise RuntimeError("boom")

    monkeypatch.setattr(loop, "_fit", fake_fit)
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
              torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    with pytest.raises(RuntimeError, match="boom"):
        fit({"model": {"name": "small_cnn"}}, out=tmp_path / "run")
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) == before


def test_review_fixes_of_the_training_entry_points(tmp_path, capsys, monkeypatch):
    """A mapping's base: is merged (it was dropped: the defaults trained); a crop larger than the padded training
    images is refused before the output folder is written or an old run cleared; under torchrun only rank 0 prints
    the JSON summary."""
    import json

    from aprkit.cli import main
    from aprkit.train.config import config_from_dict

    small = ["model.name=_tiny_test_cnn", "data.dataset=synthetic:64", "optim.batch_size=16", "optim.epochs=1",
             "data.test_limit=32", "data.num_workers=0", "train.progress=false", "train.max_steps=1"]
    (tmp_path / "base.yaml").write_text("model: {name: _tiny_test_cnn}\naug: {method: apr_p}\n")
    monkeypatch.chdir(tmp_path)
    res = fit({"base": "base.yaml", "data": {"dataset": "synthetic:64", "num_workers": 0, "test_limit": 16},
               "optim": {"batch_size": 16, "epochs": 1}, "train": {"progress": False, "max_steps": 1}}, out=None)
    assert res["config"]["model"]["name"] == "_tiny_test_cnn" and res["config"]["aug"]["method"] == "apr_p"
    with pytest.raises(ValueError, match="base"):
        config_from_dict({"base": "base.yaml"})
    from aprkit.config import read_config_files
    from aprkit.train.config import resolve_bases

    assert resolve_bases({"base": "", "aug": {"method": "apr_s"}}) == {"aug": {"method": "apr_s"}}  # as in a file
    # read as a file's base: is (one reader): a path object, ~/ and ${VAR} in the path, a list merged left to right
    home = tmp_path / "home"
    (home / "cfg").mkdir(parents=True)
    (home / "cfg" / "b2.yaml").write_text("aug: {method: apr_sp}\noptim: {epochs: 3}\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CFG_DIR", str(home / "cfg"))
    for bases in ("~/cfg/b2.yaml", "${CFG_DIR}/b2.yaml", home / "cfg" / "b2.yaml"):
        assert resolve_bases({"base": bases}) == {"aug": {"method": "apr_sp"}, "optim": {"epochs": 3}}
    assert resolve_bases({"base": ["~/cfg/b2.yaml", "base.yaml"]})["aug"] == {"method": "apr_p"}
    for bad in (5, {"a": 1}):
        with pytest.raises(TypeError, match="config mapping: 'base' must be a path or a list of paths"):
            resolve_bases({"base": bad})
    (tmp_path / "bad.yaml").write_text("base: 5\n")
    with pytest.raises(TypeError, match="bad.yaml: 'base' must be a path or a list of paths"):
        read_config_files(tmp_path / "bad.yaml")

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--set", *small]) == 0
    summary = json.loads(capsys.readouterr().out)
    before = (run / "model.pt").read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["train", "--out", str(tmp_path / "fresh" if not extra else run), *extra,
                     "--set", *small, "data.image_size=48"]) == 2
        assert "data.crop_padding=4" in capsys.readouterr().err
    assert not (tmp_path / "fresh").exists() and (run / "model.pt").read_bytes() == before
    import aprkit.train.loop as loop

    real_fit = loop.fit
    monkeypatch.setattr(loop, "fit", lambda *a, **k: {**real_fit(*a, **k), "rank": 1})  # a torchrun worker's result
    assert main(["train", "--out", str(tmp_path / "rank1"), "--set", *small]) == 0
    assert capsys.readouterr().out == ""
    assert summary["global_step"] == 1


def test_a_diverged_run_says_so_and_writes_strict_json(tmp_path, capsys):
    """A loss gone NaN is reported on stderr at its epoch, ``aprkit train`` exits 1, and metrics.json and the printed
    summary stay strict JSON (null, not a bare NaN that strict parsers refuse) (tester)."""
    import json

    from aprkit.cli import main

    rc = main(["train", "--out", str(tmp_path), "--set", "model.name=_tiny_test_cnn", "data.dataset=synthetic:64",
               "model.num_classes=10", "optim.epochs=1", "optim.batch_size=16", "optim.lr=1e12", "data.num_workers=0",
               "train.progress=false", "train.tensorboard=false"])
    out, err = capsys.readouterr()
    assert rc == 1 and "the run diverged" in err and "at epoch 1" in err
    row = json.loads((tmp_path / "metrics.json").read_text())[0]
    assert row.get("test_acc") in (None, 0.0)  # NaN logits predict nothing (not class 0)
    assert "**Status:** diverged (training loss nan at epoch 1 of 1)" in (tmp_path / "train_report.md").read_text()
    strict = {"parse_constant": lambda c: pytest.fail(f"bare {c} in JSON")}
    assert json.loads((tmp_path / "metrics.json").read_text(), **strict)[0]["train_loss"] is None
    assert json.loads(out, **strict)["final"]["train_loss"] is None


def test_batch_ops_refuse_what_they_cannot_read(images_u8):
    """random_crop(x, 0) returned empty images; to_float read an int32 image of 0..255 as floats up to 255; a NumPy
    generator failed with "has no attribute 'device'" in every sampler (fuzz tester)."""
    import numpy as np

    from aprkit.augment import sample_pair_params, sample_single_params
    from aprkit.train.batch_ops import to_float

    with pytest.raises(ValueError, match="size must be >= 1"):
        random_crop(images_u8, 0, 4)
    with pytest.raises(TypeError, match="images must be uint8 .* or floating point .*, got torch.int32"):
        to_float(images_u8.to(torch.int32))
    for call in (lambda g: random_crop(images_u8, 32, 4, generator=g), lambda g: random_hflip(images_u8, generator=g),
                 lambda g: sample_single_params(4, generator=g), lambda g: sample_pair_params(4, generator=g)):
        for bad in (np.random.default_rng(0), 5):
            with pytest.raises(TypeError, match="generator must be a torch.Generator or None"):
                call(bad)
