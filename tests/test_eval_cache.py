"""Result identity: every cached number is keyed by everything it depends on (issue 12, items 1, 2 and 4)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import aprkit.corruptions
from aprkit._batch import CPU_BLOCK
from aprkit.eval import evaluate
from aprkit.eval.engine.cache import MemoryCache, Unidentifiable, cached, identity, result_key
from aprkit.eval.engine.fingerprint import model_fingerprint
from aprkit.eval.engine.datasets import TensorImageDataset, dataset_id
from aprkit.eval.suites import EvalContext, load_suites
from conftest import natural_images
from test_eval_runner import Tiny, small_data

pytestmark = pytest.mark.usefixtures("one_thread")

CELL = dict(suite="corruption", corruptions=["contrast"], severities=[2], device="cpu", batch_size=8, progress=False)


def _ctx(model=None, **kw) -> EvalContext:
    return EvalContext(model=model or Tiny(), progress=False, **kw)


def test_result_key_holds_weights_data_settings_and_options():
    ds = small_data(40)
    base = result_key(_ctx(), "cell", ds, corruption="fog", severity=1)
    assert base == result_key(_ctx(model_id="another label", batch_size=3, channels_last=True, num_workers=2), "cell", ds,
                              severity=1, corruption="fog")  # labels and batching are not identity; option order is free
    other_data = small_data(40)
    other_data.images = other_data.images.clone()
    other_data.images[5] ^= 1  # one image in the middle (the old key sampled images 0, n/2 and n-1 only)
    changed = [
        result_key(_ctx(Tiny(seed=1)), "cell", ds, corruption="fog", severity=1),
        result_key(_ctx(), "cell", other_data, corruption="fog", severity=1),
        result_key(_ctx(options={"limit": 20}), "cell", ds, corruption="fog", severity=1),
        result_key(_ctx(options={"num_classes": 10}), "cell", ds, corruption="fog", severity=1),
        result_key(_ctx(seed=1), "cell", ds, corruption="fog", severity=1),
        result_key(_ctx(amp=True), "cell", ds, corruption="fog", severity=1),
        result_key(_ctx(), "cell", ds, corruption="fog", severity=2),
        result_key(_ctx(), "cell", ds, corruption="fog", severity=1, code=3),
        result_key(_ctx(), "ood-scores", ds, corruption="fog", severity=1),
    ]
    assert len({base, *changed}) == len(changed) + 1
    with pytest.raises(ValueError, match="run settings"):
        result_key(_ctx(), "cell", ds, limit=5)
    with pytest.raises(ValueError, match="data must identify"):
        result_key(_ctx(), "cell", "")


def test_identity_resolves_specs_and_refuses_anonymous_callables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c").mkdir()
    from aprkit._hash import path_state

    ident = identity({"corrupted": "cifar10-c:c", "n": 3})
    assert ident == {"corrupted": f"cifar10-c:{tmp_path / 'c'}@{path_state(tmp_path / 'c')}", "n": 3}
    (tmp_path / "c" / "fog.npy").write_bytes(b"x")  # the folder's files are part of the identity
    assert identity({"corrupted": "cifar10-c:c", "n": 3}) != ident
    from aprkit.data.noise import NOISE_VERSION

    assert identity("noise:uniform") == f"noise:uniform@v{NOISE_VERSION}"  # the definitions' version names them
    assert identity(dataset_id) == "aprkit.eval.engine.datasets.dataset_id"
    assert identity(torch.ones(3)) != identity(torch.zeros(3))
    with pytest.raises(Unidentifiable, match="cache_id"):
        identity(lambda c, s: None)
    ctx = _ctx(cache=MemoryCache())
    calls = []
    for _ in range(2):
        with pytest.warns(RuntimeWarning, match="recomputed every run"):
            cached(ctx, "cell", small_data(8), lambda: calls.append(1) or {"x": 1}, source=lambda c, s: None)
    assert len(calls) == 2  # never cached, never wrongly shared


def test_model_label_is_display_only(tmp_path):
    """Item 1: two different networks evaluated with the same model_id into one folder must not share cells."""
    ds = small_data(24)
    first = evaluate(Tiny(seed=0), data=ds, model_id="mynet", out_dir=tmp_path, report=False, **CELL)["corruption"]
    with pytest.warns(RuntimeWarning, match="label 'mynet' previously named other weights"):
        second = evaluate(Tiny(seed=1), data=ds, model_id="mynet", out_dir=tmp_path, report=False, **CELL)["corruption"]
    alone = evaluate(Tiny(seed=1), data=ds, **CELL)["corruption"]
    assert second["cells"] == alone["cells"] and second["clean"] == alone["clean"]
    assert second["cells"] != first["cells"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["models"]["mynet"]["corruption"]["cells"] == alone["cells"]  # the stale entry was dropped
    assert saved["meta"]["provenance"]["mynet"]["corruption"]["fingerprint"] == model_fingerprint(Tiny(seed=1))


def test_in_memory_data_is_identified_by_content(tmp_path):
    a = small_data(40)
    b = TensorImageDataset(a.images.clone(), a.labels.clone())
    b.images[7] = 255 - b.images[7]
    b.labels[7] = (b.labels[7] + 1) % 10
    assert dataset_id(a) != dataset_id(b)
    evaluate(Tiny(), data=a, out_dir=tmp_path, report=False, **CELL)
    model = Tiny()
    rb = evaluate(model, data=b, out_dir=tmp_path, report=False, **CELL)["corruption"]
    assert model._calls == 2 * -(-40 // CPU_BLOCK)  # clean + 1 cell in CPU blocks, nothing answered from a's entries
    assert rb == evaluate(Tiny(), data=b, **CELL)["corruption"]


def test_cue_conflict_stimuli_are_identified_by_every_image():
    from aprkit.eval.suites.cue_conflict import CueConflictStimuli

    images, s, t = natural_images(16, seed=4), torch.arange(16) % 4, (torch.arange(16) + 1) % 4
    other = images.clone()
    other[3] ^= 1  # the old id hashed every (n // 8)-th image only
    ids = {CueConflictStimuli(x, s, t, ["a", "b", "c", "d"]).cache_id for x in (images, other)}
    assert len(ids | {CueConflictStimuli(images, s, t, ["a", "b", "c", "e"]).cache_id}) == 3


def test_corruption_code_version_is_in_generated_cell_keys(tmp_path, monkeypatch):
    ds = small_data(16)
    evaluate(Tiny(), data=ds, out_dir=tmp_path, report=False, **CELL)
    again = Tiny()
    evaluate(again, data=ds, out_dir=tmp_path, report=False, **CELL)
    assert again._calls == 0
    import aprkit.corruptions.api as api

    monkeypatch.setitem(api._VERSIONS, "fog", 99)  # another corruption's version: this cell is reused
    unchanged = Tiny()
    evaluate(unchanged, data=ds, out_dir=tmp_path, report=False, **CELL)
    assert unchanged._calls == 0
    monkeypatch.setitem(api._VERSIONS, CELL["corruptions"][0], 99)  # this corruption's outputs changed
    changed = Tiny()
    evaluate(changed, data=ds, out_dir=tmp_path, report=False, **CELL)
    assert changed._calls == -(-16 // CPU_BLOCK)  # the generated cell is recomputed, the clean cell is shared


def test_transplant_key_has_the_data_and_the_limit():
    """Item 2: the transplant suite's cache entry of dataset A must not answer for dataset B (or another limit)."""
    suite = load_suites()["transplant"]()
    from test_transplant import SmallCNN, calibrate_head

    opts = {"transplant_n_pairs": 8, "transplant_n_control": 8, "transplant_sites": ["output"], "transplant_codes": ["sign"],
            "transplant_layers": ["blocks.0"]}
    a = (natural_images(24, size=16, seed=1).float() / 255, torch.arange(24) % 6)
    b = (natural_images(24, size=16, seed=2).float() / 255, torch.arange(24) % 6)
    torch.manual_seed(0)
    model = SmallCNN().eval()
    calibrate_head(model, model.fc, torch.cat([a[0], b[0]]))
    shared = _ctx(model, cache=MemoryCache(), options=opts)
    ra, rb = suite.run(shared, a), suite.run(shared, b)
    assert rb == suite.run(_ctx(model, options=opts), b) and rb != ra
    limited = _ctx(model, cache=shared.cache, options={**opts, "limit": 12})
    assert suite.run(limited, a)["config"]["n_images"] == 12


def test_cells_record_the_world_and_batch_sizes_that_made_them(tmp_path, monkeypatch):
    """Item 4: a 1-process rerun may reuse a 2-process run's cells, but results.json says who made them."""
    import aprkit.eval.engine.runner as runner

    ds = small_data(16)
    with monkeypatch.context() as m:  # pretend to be a 2-process torchrun (the data stays unsharded)
        m.setattr(runner, "group_info", lambda: (0, 2))
        m.setattr(runner, "sync_weights", lambda net: None)
        evaluate(Tiny(), data=ds, out_dir=tmp_path, report=False, **CELL)
    stored = [json.loads(p.read_text())["value"] for p in (tmp_path / "cache").glob("*.json")]
    threads = torch.get_num_threads()
    assert stored and all(v["_produced_by"] == {"world_size": [2], "batch_size": [8], "device": ["cpu"],
                                                      "channels_last": [True], "threads": [threads]} for v in stored)
    res = evaluate(Tiny(), data=ds, out_dir=tmp_path, report=False, **{**CELL, "batch_size": 5})
    assert res.meta["world_size"] == [2] and res.meta["batch_size"] == [8]  # reused, labelled truthfully
    assert "_produced_by" not in res["corruption"]
    evaluate(Tiny(), data=ds, out_dir=tmp_path, report=False, **{**CELL, "batch_size": 5, "severities": [2, 4]})
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert meta["world_size"] == [1, 2] and meta["batch_size"] == [5, 8]  # a mix of both, and it says so
    assert meta["provenance"]["Tiny"]["corruption"]["produced_by"]["world_size"] == [1, 2]
    assert meta["threads"] == [threads]  # an ImageNet head's last bits move with it (invariance tester): recorded


# ---------------------------------------------------------------- fingerprint memo (issue 17)


def _count_hashes(monkeypatch) -> list[int]:
    import aprkit.eval.engine.fingerprint as cache_mod

    calls: list[int] = []
    real = cache_mod._hash_state
    monkeypatch.setattr(cache_mod, "_hash_state", lambda *args: (calls.append(1), real(*args))[1])
    return calls


def test_fingerprint_is_remembered_until_the_weights_change(monkeypatch):
    calls = _count_hashes(monkeypatch)
    model = Tiny(seed=0)
    first = model_fingerprint(model)
    assert model_fingerprint(model) == first and model_fingerprint(model, length=8) == first[:8] and len(calls) == 1
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    opt.step()  # in place: bumps the version counters
    stepped = model_fingerprint(model)
    assert stepped != first and len(calls) == 2
    model.load_state_dict(Tiny(seed=0).state_dict())  # back to the first weights, copied in place
    assert model_fingerprint(model) == first and len(calls) == 3
    with torch.no_grad():
        model.fc.bias[0] += 1.0
    assert model_fingerprint(model) not in (first, stepped)
    model.fc.bias.data = torch.zeros(10)  # a replaced tensor: new storage
    fresh = Tiny(seed=0)
    fresh.fc.bias.data = torch.zeros(10)
    zeroed = model_fingerprint(fresh)
    assert model_fingerprint(model) == zeroed
    n = len(calls)
    model.fc.bias.data.add_(1.0)  # a write through .data is not versioned: reuse=False hashes again
    assert model_fingerprint(model, reuse=False) != zeroed and len(calls) == n + 1


def test_fingerprint_of_inference_mode_weights_is_hashed_each_time(monkeypatch):
    calls = _count_hashes(monkeypatch)
    with torch.inference_mode():
        model = Tiny(seed=2)  # tensors without a version counter
    assert model_fingerprint(model) == model_fingerprint(Tiny(seed=2)) == model_fingerprint(model)
    assert len(calls) == 3


def test_second_evaluate_of_a_model_hashes_once_per_call(monkeypatch):
    calls = _count_hashes(monkeypatch)
    model, ds = Tiny(seed=1), small_data(16)
    first = evaluate(model, data=ds, **CELL)
    assert first.meta["channels_last"] == [True]  # the default for conv models: converted for the run ...
    assert model.conv.weight.is_contiguous()  # ... and given back in the layout it had
    second = evaluate(model, data=ds, **CELL)
    assert len(calls) == 2  # once per call (weights written through .data keep their version), not once per cell
    assert second.models["Tiny"]["corruption"] == first.models["Tiny"]["corruption"]
    cl = Tiny(seed=1).to(memory_format=torch.channels_last)
    evaluate(cl, data=ds, **CELL)
    ptrs = [p.data_ptr() for p in cl.parameters()]
    evaluate(cl, data=ds, **CELL)
    assert [p.data_ptr() for p in cl.parameters()] == ptrs  # already channels_last: never converted


def test_fingerprint_covers_non_persistent_buffers_and_module_settings():
    """Preprocessing that lives outside ``state_dict`` (non-persistent mean/std, a wrapper's resize/crop, the
    activation type) changes the outputs, so it must change the fingerprint; a stale cached cell was reused."""
    from aprkit.models.foreign import Preprocess
    from aprkit.models.normalize import Normalize

    inner = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    plain = Normalize(inner, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), num_classes=10)
    imagenet = Normalize(inner, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), num_classes=10)
    assert plain.state_dict().keys() == imagenet.state_dict().keys()  # mean/std are not in the state dict
    assert model_fingerprint(plain) != model_fingerprint(imagenet)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    a = Preprocess(inner, mean, std, resize=4, crop=2)
    assert model_fingerprint(a) != model_fingerprint(Preprocess(inner, mean, std, resize=3, crop=2))
    first = model_fingerprint(a)
    a.interpolation = "bicubic"  # a setting changed on the same object: the memo must not hide it
    assert model_fingerprint(a) != first
    relu = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    gelu = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    gelu.load_state_dict(relu.state_dict())
    assert model_fingerprint(relu) != model_fingerprint(gelu)


def test_fingerprint_masks_memory_addresses_in_the_module_tree():
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fn = object()  # an extra_repr with an address differs between processes

        def extra_repr(self) -> str:
            return repr(self.fn)

    a, b = Holder(), Holder()
    assert repr(a) != repr(b) and model_fingerprint(a) == model_fingerprint(b)


def test_generated_data_and_demo_runs_are_keyed_by_their_version(monkeypatch, tmp_path):
    """The synthetic images are named by their generator's version (the spec and the demo's sets), and the demo's
    run folders by the resolved training config and the recipe version: a change to either is not served results
    cached for the old one."""
    from aprkit.data import synthetic
    from aprkit.demo import pipeline
    from aprkit.eval.engine.datasets import dataset_id
    from aprkit.train import trajectory

    before = dataset_id("synthetic")
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    assert dataset_id("synthetic") != before
    seen = []
    monkeypatch.setattr("aprkit.train.fit", lambda cfg, out, **kw: seen.append(out) or {"history": [], "model": nn.Identity(),
                                                                                       "checkpoint": None})
    data = type("D", (), {"train": type("T", (), {"cache_id": "a"})(), "test": type("T", (), {"cache_id": "b"})()})()
    cfg = {"model": {"name": "resnet20"}, "aug": {"method": "standard"}, "optim": {"epochs": 1}, "train": {"progress": False}}
    pipeline.train_model("m", cfg, data, tmp_path)
    pipeline.train_model("m", {**cfg, "train": {"progress": True}}, data, tmp_path)  # progress is not in the key
    monkeypatch.setattr(trajectory, "recipe_version", lambda c: trajectory.RECIPE_VERSION + 1)  # a recipe change for this run
    pipeline.train_model("m", cfg, data, tmp_path)
    assert seen[0] == seen[1] != seen[2]


def test_generated_frost_cells_are_keyed_by_the_textures(monkeypatch, tmp_path):
    """Another set of frost textures (APRKIT_FROST_DIR) gives other frost images: their cells are not served from
    the cache of the first set."""
    import shutil

    from aprkit.corruptions._frost import FROST_FILES, find_frost_dir

    try:
        src = find_frost_dir()
    except FileNotFoundError:
        pytest.skip("frost textures not installed")
    other = tmp_path / "frost"
    other.mkdir()
    for name in FROST_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, other / name)
    from PIL import Image

    first = other / FROST_FILES[0]
    Image.open(first).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(first)
    data = TensorImageDataset(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1]))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))

    def run() -> int:
        evaluate(model, suite="corruption", data=data, corruptions=["frost"], severities=[1], device="cpu",
                 progress=False, cache_dir=tmp_path / "cache", options={"check_classes": False})
        return sum(1 for p in (tmp_path / "cache").rglob("*.json"))

    n = run()
    assert run() == n  # the same textures: cached
    monkeypatch.setenv("APRKIT_FROST_DIR", str(other))
    assert run() > n
    # textures replaced while the process runs: read again (the loader's own cache kept the old ones, whose images
    # were then stored under the new textures' key)
    from aprkit.corruptions._frost import frost_textures

    before = frost_textures(0.2, (8, 8), other)
    Image.open(first).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(first)
    os.utime(first, ns=(os.stat(first).st_atime_ns, os.stat(first).st_mtime_ns + 10**9))
    after = frost_textures(0.2, (8, 8), other)
    assert not torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_the_demos_shared_corruptions_name_their_frost_textures(monkeypatch, tmp_path):
    """The demo's corrupted sets (a callable source, identified by its cache_id) change identity with the frost
    textures, as the eval's generated cells do."""
    from aprkit.demo.config import TensorSet
    from aprkit.demo.pipeline import SharedCorruptions

    shared = SharedCorruptions(TensorSet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1]), "t"), 0,
                               "cifar", progress=False)
    before = shared.cache_id
    monkeypatch.setenv("APRKIT_FROST_DIR", str(tmp_path))  # no textures there: another identity
    assert shared.cache_id != before and "frost=" in before


def test_path_state_follows_the_files_of_a_data_folder(tmp_path):
    """Rewritten, renamed and added files at the top two levels (and files added one level further down) change the
    state that keys on-disk datasets; nothing changed, the same state."""
    import os

    from aprkit._hash import path_state

    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "a" / "x" / "1.png").write_bytes(b"one")
    (tmp_path / "g.npy").write_bytes(b"1234")
    first = path_state(tmp_path)
    assert path_state(tmp_path) == first
    st = (tmp_path / "g.npy").stat()
    (tmp_path / "g.npy").write_bytes(b"5678")  # same size, rewritten
    os.utime(tmp_path / "g.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = path_state(tmp_path)
    assert second != first
    (tmp_path / "a" / "x" / "2.png").write_bytes(b"two")  # a file added in a class folder (depth 3)
    os.utime(tmp_path / "a" / "x", ns=(1, 10**18))
    assert path_state(tmp_path) != second
    (tmp_path / "a").rename(tmp_path / "b")
    assert path_state(tmp_path) not in (first, second)


def test_a_downloadable_spec_without_folder_is_keyed_by_the_data_roots_copy(tmp_path, monkeypatch):
    """``cifar10-c`` alone names the copy under ``$APRKIT_DATA``: two data roots are two datasets."""
    from aprkit.data.sources import MARKER

    ids = []
    for root in ("a", "b"):
        (tmp_path / root / "CIFAR-10-C").mkdir(parents=True)
        (tmp_path / root / "CIFAR-10-C" / MARKER).write_text("ok")
        monkeypatch.setenv("APRKIT_DATA", str(tmp_path / root))
        ids.append(dataset_id("cifar10-c"))
    assert ids[0] != ids[1] and str(tmp_path / "a" / "CIFAR-10-C") in ids[0]
    monkeypatch.setenv("APRKIT_DATA", str(tmp_path / "none"))
    assert dataset_id("cifar10-c") == "cifar10-c#test"  # absent: the spec itself (the reader says what is missing)


def test_weights_swapped_through_data_are_evaluated_again(tmp_path):
    """EMA helpers write other weights through ``p.data`` (no version bump): evaluate hashes the weights afresh."""
    model, data = Tiny(), small_data(40)
    kw = dict(out_dir=tmp_path, suite="calibration", corruptions=["none"], device="cpu", progress=False, report=False)
    first = evaluate(model, data=data, **kw)["calibration"]["clean"]["nll"]
    with torch.no_grad():
        for p in model.parameters():
            p.data.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    again = evaluate(model, data=data, **kw)["calibration"]["clean"]["nll"]
    fresh = evaluate(model, data=data, **(kw | {"out_dir": tmp_path / "fresh"}))["calibration"]["clean"]["nll"]
    assert again == fresh != first


def test_fingerprint_holds_plain_module_attributes():
    """A setting kept as a plain attribute (a temperature no ``repr`` shows) changes the fingerprint."""
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.t = Tiny(), 1.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) / self.t

    m = Scaled()
    before = model_fingerprint(m)
    m.t = 20.0
    assert model_fingerprint(m) != before
    m.t = 1.0
    m.train()  # the training flag is not part of it (evaluate sets eval mode)
    assert model_fingerprint(m) == before


def test_dataset_id_reads_every_label_and_in_memory_images():
    """A dataset without cache_id: every label (``targets``) and an in-memory ``data`` array key it, not 16 samples."""
    class Lazy(torch.utils.data.Dataset):
        def __init__(self, targets: list[int]) -> None:
            self.targets = targets
            self.data = natural_images(40, 8, seed=1)

        def __len__(self) -> int:
            return len(self.targets)

        def __getitem__(self, i: int):
            return self.data[i], self.targets[i]

    base = [i % 10 for i in range(40)]
    fixed = list(base)
    fixed[7] = 3  # not one of the 16 sampled positions
    assert dataset_id(Lazy(base)) != dataset_id(Lazy(fixed))
    a, b = Lazy(base), Lazy(base)
    b.data = b.data.clone()
    b.data[7] ^= 1
    assert dataset_id(a) != dataset_id(b)
    sampled = Lazy(base)
    del sampled.data  # nothing in memory: the key samples images and says so
    sampled.__class__ = type("OnDisk", (Lazy,), {"__getitem__": lambda self, i: (a.data[i], self.targets[i])})
    with pytest.warns(RuntimeWarning, match="16 of its images"):
        dataset_id(sampled)


def test_a_callable_corrupted_source_is_keyed_by_the_data_it_returns(tmp_path):
    """Two functions of the same name returning other data: the cells are not shared."""
    clean = small_data(24)
    version = {"seed": 0}

    def corrupted(corruption: str, severity: int) -> TensorImageDataset:
        g = torch.Generator().manual_seed(version["seed"])
        return TensorImageDataset(torch.randint(0, 256, clean.images.shape, dtype=torch.uint8, generator=g),
                                  clean.labels)

    corrupted.__qualname__ = "corrupted"  # a module-level name, as a script's function has
    kw = dict(suite="corruption", cache_dir=tmp_path, corrupted=corrupted, corruptions=["fog"], severities=[1],
              device="cpu", progress=False, report=False)
    model = Tiny()
    first = evaluate(model, data=clean, **kw)["corruption"]["cells"]["fog"]["1"]
    version["seed"] = 1
    second = evaluate(model, data=clean, **kw)["corruption"]["cells"]["fog"]["1"]
    fresh = evaluate(model, data=clean, **(kw | {"cache_dir": tmp_path / "fresh"}))["corruption"]["cells"]["fog"]["1"]
    assert second == fresh and second["nll"] != first["nll"]


def test_evaluate_refuses_a_misspelt_data_mapping_key():
    with pytest.raises(ValueError, match="'calibraton': not a suite.*did you mean 'calibration'"):
        evaluate(Tiny(), suite="calibration", data={"default": small_data(8), "calibraton": small_data(8)},
                 device="cpu", progress=False)


def test_accuracy_refuses_negative_labels():
    from aprkit.eval.metrics import accuracy

    with pytest.raises(ValueError, match="negative"):
        accuracy([-1, -1, 3], [-1, -1, 2])
    assert accuracy([1, 2, 3], [1, 2, 2]) == pytest.approx(2 / 3)


def test_dataset_id_of_path_lists_string_labels_and_array_datasets():
    """Datasets holding file paths (``data``) or string labels are still identified (by sampled items); an
    ``ArrayDataset`` is keyed by every pixel of its rows."""
    import numpy as np

    from aprkit.data.arrays import ArrayDataset

    class Paths(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.data = np.array([f"img{i}.png" for i in range(20)])
            self.targets = [f"class{i % 3}" for i in range(20)]

        def __len__(self) -> int:
            return 20

        def __getitem__(self, i: int):
            return torch.full((3, 4, 4), i, dtype=torch.uint8), i % 3

    with pytest.warns(RuntimeWarning, match="16 of its images"):
        assert dataset_id(Paths()).startswith("Paths-20-")
    x = natural_images(20, 8, seed=2).permute(0, 2, 3, 1).numpy().copy()
    a = ArrayDataset(x, np.arange(16) % 10, start=2, stop=18)
    x2 = x.copy()
    x2[3] ^= 1  # an image outside the 16-item sample of the rows 2..17
    assert dataset_id(a) != dataset_id(ArrayDataset(x2, np.arange(16) % 10, start=2, stop=18))


def test_fingerprint_of_a_wrapped_model_is_the_models():
    """DataParallel / compiled wrappers (DDP keeps attributes that change per forward and per rank) hash as the
    model they wrap."""
    m = Tiny()
    assert model_fingerprint(nn.DataParallel(m)) == model_fingerprint(m)


def test_fingerprint_holds_lists_tensors_functions_and_hooks():
    """What a forward may read besides parameters and buffers: a list or dict setting, a tensor kept as a plain
    attribute, a function attribute and forward (pre-)hooks (they were left out: the cache returned the previous
    model's numbers). Two models built the same way share their fingerprint."""
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.mean, self.gain, self.act = Tiny(), [0.5, 0.5, 0.5], torch.tensor(1.0), torch.relu

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.inner(x - torch.tensor(self.mean)[:, None, None]) * self.gain)

    base = model_fingerprint(Wrapped())
    assert model_fingerprint(Wrapped()) == base
    for change in (lambda m: setattr(m, "mean", [0.3] * 3), lambda m: setattr(m, "gain", torch.tensor(-1.0)),
                   lambda m: setattr(m, "act", torch.tanh), lambda m: m.gain.fill_(2.0),
                   lambda m: m.register_forward_hook(lambda mod, args, out: -out),
                   lambda m: m.inner.register_forward_pre_hook(lambda mod, args: (args[0].flip(-1),))):
        m = Wrapped()
        change(m)
        assert model_fingerprint(m) != base
    flip = lambda mod, args: (args[0].flip(-1),)  # noqa: E731
    a, b = Wrapped(), Wrapped()
    a.register_forward_pre_hook(flip)
    b.register_forward_pre_hook(flip)
    assert model_fingerprint(a) == model_fingerprint(b) != base


def test_data_changed_in_place_and_rewritten_png_files_are_evaluated_again(tmp_path):
    """A dataset object edited between two evaluate calls, and a CIFAR PNG tree whose images were rewritten in place
    (three levels down, where the folder scan did not look), get new ids: their cells are computed again."""
    import os

    from PIL import Image

    ds = small_data(16)
    kw = dict(CELL, out_dir=tmp_path / "out")
    first = evaluate(Tiny(), data=ds, **kw).models["Tiny"]["corruption"]["clean"]["accuracy"]
    with torch.no_grad():
        ds.labels[:] = Tiny()(ds.images.float() / 255).argmax(1)  # in place: now every label is the prediction
    assert first < 1.0 and evaluate(Tiny(), data=ds, **kw).models["Tiny"]["corruption"]["clean"]["accuracy"] == 1.0
    img = tmp_path / "test" / "cat" / "0.png"
    img.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(img)
    before = dataset_id(f"cifar10:{tmp_path}", "test")
    st = img.stat()
    Image.new("RGB", (8, 8), (90, 20, 30)).save(img)  # same size on disk, rewritten in place
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    os.utime(img.parent, ns=(st.st_atime_ns, st.st_mtime_ns))  # the class folder's time as before
    assert dataset_id(f"cifar10:{tmp_path}", "test") != before


def test_two_runs_into_one_folder_keep_each_others_suites_and_a_bad_record_is_recomputed(tmp_path):
    """Two processes evaluating into one folder add up (each save replayed its changes on the index it had read at
    its start, dropping the other's); a cache record edited by hand is computed again instead of crashing."""
    from aprkit.eval.engine.cache import ResultCache
    from aprkit.eval.engine.outdir import SuiteIndex

    a, b = SuiteIndex(tmp_path), SuiteIndex(tmp_path)  # both read the empty folder
    a.want([("A", "corruption")])
    a.save()
    b.want([("B", "ood")])
    b.add({"model": "B", "suite": "ood", "value": {"x": 1}, "fingerprint": "f"})
    b.save()
    a.add({"model": "A", "suite": "corruption", "value": {"x": 2}, "fingerprint": "g"})
    a.save()
    again = SuiteIndex(tmp_path)
    assert sorted((e["model"], e["suite"]) for e in again.entries) == [("A", "corruption"), ("B", "ood")]
    assert again.pending == []
    cache = ResultCache(tmp_path / "cache")
    cache.put("k", {"v": 1})
    for bad in ({"key": "k"}, {"key": "k", "value": [1, 2]}):
        cache.path_for("k").write_text(json.dumps(bad))
        assert cache.get("k") is None


def test_report_of_a_relabelled_model_is_refreshed_before_the_new_run_ends(tmp_path):
    """When a label now names other weights, the report drops their numbers at once (a run killed later had left the
    old weights' report in place while results.json had withdrawn it)."""
    kw = dict(CELL, out_dir=tmp_path, model_id="L")
    evaluate(Tiny(), data=small_data(16), **kw)
    assert "L" in (tmp_path / "report.md").read_text()
    seen = []

    def killed(mod, args):  # as SIGKILL at the first forward: no except clause runs after it
        seen.append((tmp_path / "report.md").read_text())
        raise SystemExit

    m = Tiny()
    with torch.no_grad():
        m.fc.bias.add_(1.0)  # other weights under the same label
    m.register_forward_pre_hook(killed)
    with pytest.raises(SystemExit):
        evaluate(m, data=small_data(16), **kw)
    # nothing finished is left under L before the work starts: no report of withdrawn numbers, only what is pending
    (md,) = seen
    assert "**Status:** INCOMPLETE (not yet run: L: corruption)" in md and "\n## " not in md


def test_fingerprint_is_stable_across_forward_passes_and_processes(tmp_path):
    """An observer hook's list filling up, an empty cache dict a forward pass fills, frozenset constants (ordered by
    PYTHONHASHSEED) and a function's file and line leave the fingerprint alone; a default argument changes it."""
    import subprocess
    import sys
    import textwrap

    stats = []

    def observer(mod, args, out):
        stats.append(float(out.sum()))

    m = Tiny()
    m.register_forward_hook(observer)
    m.cache = {}
    before = model_fingerprint(m)
    m(torch.rand(2, 3, 8, 8))
    m.cache["k"] = torch.zeros(1)
    assert model_fingerprint(m) == before
    one, minus = (lambda mod, a, o, s=1.0: o * s), (lambda mod, a, o, s=-1.0: o * s)
    a, b = Tiny(), Tiny()
    a.register_forward_hook(one)
    b.register_forward_hook(minus)
    assert model_fingerprint(a) != model_fingerprint(b)
    script = tmp_path / "fp.py"
    script.write_text(textwrap.dedent("""
        import sys, torch
        from torch import nn
        from aprkit.eval.engine.fingerprint import model_fingerprint
        src = "def act(x):\\n    return torch.relu(x) if 'relu' in {'relu', 'gelu', 'silu'} else x\\n"
        ns = {"torch": torch}
        exec(compile(src, sys.argv[1], "exec"), ns)
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(3, 3))
        m.act = ns["act"]
        print(model_fingerprint(m))
    """))
    digests = {subprocess.run([sys.executable, str(script), f"/x{seed}/nb.py"], capture_output=True, text=True,
                              env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}, check=True).stdout
               for seed in (1, 2, 3)}
    assert len(digests) == 1


def test_a_spec_is_read_once_per_evaluate_call(tmp_path, monkeypatch):
    """The corruption suite's cells share one reader of the data spec (each rebuilt a PNG tree's file index); the
    next call reads it afresh."""
    import aprkit.data

    calls = []
    real = aprkit.data.get_dataset
    monkeypatch.setattr(aprkit.data, "get_dataset", lambda *a, **k: calls.append(a) or real(*a, **k))
    kw = dict(CELL, corruptions=["contrast", "fog"], severities=[1, 2], data="synthetic:16")
    evaluate(Tiny(), **kw)
    first = len(calls)
    evaluate(Tiny(), **kw)
    assert first <= 2 and len(calls) == 2 * first


def test_spec_spellings_share_the_files_state(monkeypatch, tmp_path):
    """``folder:~/x``, ``folder: /abs/x`` and ``FOLDER:/abs/x`` read the same files as ``folder:/abs/x`` and are keyed
    by the state of those files, so a changed image is not served an old result (the key held the bare spec)."""
    from PIL import Image

    root = tmp_path / "home" / "ft"
    (root / "c0").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "c0" / "a.png")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    spellings = ["folder:~/ft", f"folder: {root}", f"FOLDER:{root}", f"folder:{root}"]
    ids = {dataset_id(s) for s in spellings}
    assert len(ids) == 1 and str(root.resolve()) in next(iter(ids))
    Image.new("RGB", (8, 8), (200, 20, 30)).save(root / "c0" / "a.png")
    os.utime(root / "c0" / "a.png", ns=(1, 1))
    assert dataset_id("folder:~/ft") not in ids
    assert dataset_id("SYNTHETIC:5") == dataset_id("synthetic:5") and dataset_id("noise:GAUSSIAN") == dataset_id("noise:gaussian")


def test_keys_see_test_time_batch_norm_numpy_attributes_own_forward_code_and_transforms():
    """Stale results a cache probe found: a batch norm without running statistics (its results depend on the batch
    size, left out of keys), a NumPy temperature, an edited forward of a class of the same name, a transform on
    access of an in-memory dataset and a user's ``spec`` attribute were all invisible to the keys."""
    import numpy as np

    from aprkit.eval.engine.cache import batch_dependent

    class Adapt(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(self.bn(self.conv(x)).mean((2, 3)))

    m = Adapt().eval()
    assert batch_dependent(m) and not batch_dependent(Tiny())
    ctx = {bs: EvalContext(model=m, device="cpu", batch_size=bs) for bs in (4, 16)}
    assert result_key(ctx[4], "u", "synthetic:8") != result_key(ctx[16], "u", "synthetic:8")
    tiny = {bs: EvalContext(model=Tiny(), device="cpu", batch_size=bs) for bs in (4, 16)}
    assert result_key(tiny[4], "u", "synthetic:8") == result_key(tiny[16], "u", "synthetic:8")  # the last bits only

    class Temp(nn.Module):
        def __init__(self, t) -> None:
            super().__init__()
            self.fc, self.t, self.idx = nn.Linear(2, 2), t, np.arange(3)

        def forward(self, x):
            return self.fc(x) / float(self.t)

    a, b = Temp(np.float32(1.0)), Temp(np.float32(10.0))
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) != model_fingerprint(b)
    b.t = np.float32(1.0)
    assert model_fingerprint(a) == model_fingerprint(b)
    b.idx = np.arange(3)[::-1].copy()
    assert model_fingerprint(a) != model_fingerprint(b)

    def edited(self, x):  # the same class name, another forward
        return self.fc(1 - x) / float(self.t)

    Edited = type("Temp", (Temp,), {"forward": edited, "__module__": Temp.__module__})
    c = Edited(np.float32(1.0))
    c.load_state_dict(a.state_dict())
    c.idx = a.idx
    assert model_fingerprint(c) != model_fingerprint(a)

    d = small_data(16)
    flipped = TensorImageDataset(d.images, d.labels)
    flipped.__class__ = type("TensorImageDataset", (TensorImageDataset,), {
        "__getitem__": lambda self, i: (255 - self.images[i], int(self.labels[i]))})
    assert dataset_id(flipped) != dataset_id(d)  # keyed by what it hands out, not only its raw tensors
    d.spec = "my-images"  # not documented: no longer taken as the whole identity
    assert dataset_id(d) != "my-images" and dataset_id(d) == dataset_id(small_data(16))


def test_results_of_an_older_suite_version_in_the_folder_are_a_caveat(tmp_path, monkeypatch):
    """A folder's results of a suite that an upgrade changed stayed in results.json, shown as current, when the new
    aprkit evaluated only other suites there; they are a caveat until the suite runs again."""
    from aprkit.eval.suites.cue_conflict import CueConflictSuite

    def run(suite: str):
        kw = CELL if suite == "corruption" else {"suite": suite, "device": "cpu", "progress": False}
        evaluate(Tiny(), data={"default": small_data(16), "cue-conflict": "synthetic:20"}, out_dir=tmp_path,
                 report=False, **kw)
        return json.loads((tmp_path / "results.json").read_text())["meta"].get("caveats", [])

    monkeypatch.setattr(CueConflictSuite, "version", "0")  # the code before an upgrade
    assert run("cue-conflict") == []
    monkeypatch.undo()
    caveats = run("corruption")
    assert caveats == ["the cue-conflict (computed by its version 0; now 2) results of Tiny come from an older aprkit: "
                       "evaluate the suite again to update them"]
    assert run("cue-conflict") == []  # evaluated again: current
    from aprkit.eval.engine.run_record import _older

    # an entry written before suite versions were recorded: version 1, older than every suite changed since
    from aprkit.eval.suites.phase_bias import PhaseBiasSuite

    assert _older({"m": {"phase-bias": {}, "shape-bias": {"suite_version": "3"}}}) == [
        f"the phase-bias (computed by an aprkit that recorded no suite versions; now {PhaseBiasSuite.version}) results "
        "of m come from an older aprkit: evaluate the suite again to update them"]


def test_a_model_librarys_release_is_part_of_the_fingerprint(monkeypatch):
    """The forward code of robustbench's (timm's, ...) classes is not hashed: a release that changed a model's code
    served the older release's cached numbers (0.91 for 0.396). The library's version is in the key now, and
    results.json records it."""
    from aprkit.eval.engine import fingerprint as fp

    Zoo = type("Zoo", (torch.nn.Linear,), {"__module__": "robustbench.model_zoo.fake"})
    torch.manual_seed(0)
    model = Zoo(4, 2)
    monkeypatch.setattr(fp, "package_version", lambda name: "1.1.1")
    before = fp.model_fingerprint(model, reuse=False)
    monkeypatch.setattr(fp, "package_version", lambda name: "1.2.0")
    assert fp.model_fingerprint(model, reuse=False) != before
    plain = torch.nn.Linear(4, 2)
    assert fp.model_fingerprint(plain, reuse=False) == fp.model_fingerprint(plain, reuse=False)
    assert "1.2.0" not in fp._structure(plain)
