"""``aprkit corrupt`` and the -C dataset writers on tiny generated inputs."""

from __future__ import annotations

import io
import json
import os
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from aprkit.cli import main
from aprkit.corruptions import corrupt, item_seeds
from aprkit.corruptions.api import BASE_VERSION
from aprkit.corruptions.dataset import write_cifar_c, write_imagenet_c
from conftest import natural_images

NAMES = ["gaussian_noise", "contrast", "glass_blur"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def array_input(tmp_path):
    x = natural_images(6, 32).permute(0, 2, 3, 1).numpy().copy()
    labels = np.arange(6) % 3
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    return tmp_path, x, labels


@pytest.fixture
def folder_input(tmp_path):
    src = tmp_path / "src"
    imgs = natural_images(4, 40, seed=5).permute(0, 2, 3, 1).numpy()
    for i, img in enumerate(imgs):
        d = src / ("cat" if i % 2 else "dog")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"im{i}.png")
    return src


def test_cifar_layout_from_array(array_input) -> None:
    tmp, x, labels = array_input
    out = tmp / "out"
    argv = ["corrupt", str(tmp / "x.npy"), str(out), "--labels", str(tmp / "y.npy"), "--corruptions", *NAMES,
            "--batch-size", "4", "--no-progress"]
    assert main(argv) == 0
    for name in NAMES:
        arr = np.load(out / f"{name}.npy")
        assert arr.shape == (30, 32, 32, 3) and arr.dtype == np.uint8
        # severity-major: rows 2N..3N-1 are severity 3; image i seeded by item_seeds(seed, name, 3, preset, i)
        seeds = item_seeds(0, name, 3, "cifar", range(4))
        ref = corrupt(torch.from_numpy(x[:4]).permute(0, 3, 1, 2), name, 3, "cifar", seeds=seeds).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(arr[12:16], ref)
    lab = np.load(out / "labels.npy")
    assert lab.dtype == np.uint8 and np.array_equal(lab, np.tile(labels, 5))
    assert not list(out.glob("*.tmp"))


def test_a_cifar_layout_subset_warns_and_without_its_manifest_is_refused(array_input) -> None:
    """Severities 3 and 5 stack 2N rows: Hendrycks-style slicing misreads them (the writer warns), and a copy without
    manifest.json was read as 1..5 of 2N/5 images each (severity 1 = severity 3's first images): its labels, one
    sequence twice, are not one sequence five times. Another tool's manifest.json is no aprkit manifest: the
    published layout is read."""
    import json
    import shutil

    from aprkit.data import get_dataset

    tmp, x, labels = array_input
    x, labels = x[:5], labels[:5]
    labels[:] = [0, 1, 2, 3, 4]
    with pytest.warns(UserWarning, match=r"severities \[3, 5\] only"):
        write_cifar_c(x, tmp / "sub", ["fog"], labels, severities=[3, 5], progress=False)
    shutil.copytree(tmp / "sub", tmp / "bare")
    (tmp / "bare" / "manifest.json").unlink()
    with pytest.raises(ValueError, match="not one label sequence repeated"):
        get_dataset(f"cifar10-c:{tmp / 'bare'}", corruption="fog", severity=1)
    write_cifar_c(x, tmp / "all", ["fog"], labels, progress=False)
    (tmp / "all" / "manifest.json").write_text(json.dumps({"params": "someone else's"}))
    assert len(get_dataset(f"cifar10-c:{tmp / 'all'}", corruption="fog", severity=5)) == 5
    manifest = tmp / "sub" / "manifest.json"  # a damaged one says nothing either way: refused, not read as 1..5
    manifest.write_text(manifest.read_text()[:40])
    with pytest.raises(ValueError, match="cannot be read"):
        get_dataset(f"cifar10-c:{tmp / 'sub'}", corruption="fog", severity=3)


def test_cifar_layout_with_other_severities_reads_back_by_its_manifest(array_input) -> None:
    """A folder written with severities 3 only, or 2 and 5, is read by the manifest's severities: severity s is the
    block written for s (3 used to be sliced as 1..5, 1/5 of the images per 'severity'). Severities given as 5..1 are
    written in ascending order: plain ``(s - 1) * N`` slicing (Hendrycks's readers) reads them right."""
    from aprkit.data import get_dataset

    tmp, x, labels = array_input
    full = tmp / "full"
    write_cifar_c(x, full, ["shot_noise"], labels, progress=False)
    ref = {s: get_dataset(f"cifar10-c:{full}", corruption="shot_noise", severity=s) for s in range(1, 6)}
    for sevs in ([3], [5, 4, 3, 2, 1], [2, 5]):
        out = tmp / "s" / "".join(map(str, sevs))
        write_cifar_c(x, out, ["shot_noise"], labels, severities=sevs, progress=False)
        for s in range(1, 6):
            if s not in sevs:
                with pytest.raises(ValueError, match=re.escape(f"holds severities {sorted(sevs)}")):
                    get_dataset(f"cifar10-c:{out}", corruption="shot_noise", severity=s)
                continue
            ds = get_dataset(f"cifar10-c:{out}", corruption="shot_noise", severity=s)
            assert len(ds) == len(x)
            for i in range(len(x)):
                assert torch.equal(ds[i][0], ref[s][i][0]) and ds[i][1] == ref[s][i][1]
        if sorted(sevs) != [1, 2, 3, 4, 5]:
            with pytest.raises(ValueError, match="not 1..5 in order"):
                get_dataset(f"cifar10-c:{out}", corruption="shot_noise", severity=None)
        else:  # written 1..5 whatever the order asked: the file is the full set's, byte for byte
            assert np.array_equal(np.load(out / "shot_noise.npy"), np.load(full / "shot_noise.npy"))


def test_cifar_layout_resumes_and_is_reproducible(array_input) -> None:
    tmp, x, labels = array_input
    a = write_cifar_c(x, tmp / "a", ["shot_noise"], labels, seed=3, progress=False)
    stamp = os.stat(a[0]).st_mtime_ns
    assert write_cifar_c(x, tmp / "a", ["shot_noise", "fog"], labels, seed=3, progress=False) == [tmp / "a" / "fog.npy"]
    assert os.stat(a[0]).st_mtime_ns == stamp  # finished array skipped
    write_cifar_c(x, tmp / "b", ["shot_noise"], labels, seed=3, progress=False)
    assert np.array_equal(np.load(tmp / "a" / "shot_noise.npy"), np.load(tmp / "b" / "shot_noise.npy"))
    write_cifar_c(x, tmp / "c", ["shot_noise"], labels, seed=4, progress=False)
    assert not np.array_equal(np.load(tmp / "a" / "shot_noise.npy"), np.load(tmp / "c" / "shot_noise.npy"))


def test_imagenet_layout_from_folder(folder_input, tmp_path) -> None:
    out = tmp_path / "inc"
    argv = ["corrupt", str(folder_input), str(out), "--corruptions", "contrast", "pixelate", "--severities", "1", "5",
            "--size", "32", "--no-progress"]
    assert main(argv) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert len(files) == 2 * 2 * 4 and "contrast/5/cat/im1.JPEG" in files
    with Image.open(out / "contrast" / "5" / "cat" / "im1.JPEG") as im:
        assert im.format == "JPEG" and im.size == (32, 32)
    # resume: delete one file, rerun -> only that file is rewritten
    victim = out / "pixelate" / "1" / "dog" / "im0.JPEG"
    keep = out / "pixelate" / "1" / "dog" / "im2.JPEG"
    before = keep.read_bytes()
    victim.unlink()
    assert main(argv) == 0
    assert victim.exists() and keep.read_bytes() == before


def test_cifar_layout_from_folder(folder_input, tmp_path) -> None:
    out = tmp_path / "fc"
    assert main(["corrupt", str(folder_input), str(out), "--layout", "cifar", "--size", "32", "--corruptions",
                 "contrast", "--no-progress"]) == 0
    assert np.load(out / "contrast.npy").shape == (20, 32, 32, 3)
    assert np.array_equal(np.load(out / "labels.npy"), np.tile([0, 0, 1, 1], 5))  # cat/im1, cat/im3, dog/...


def test_cli_errors(array_input, capsys) -> None:
    tmp, _, _ = array_input
    assert main(["corrupt", str(tmp / "missing.npy"), str(tmp / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["corrupt", str(tmp / "x.npy"), str(tmp / "o"), "--corruptions", "fgsm", "--no-progress"]) == 2
    assert "valid names" in capsys.readouterr().err
    assert main(["corrupt", str(tmp / "x.npy"), str(tmp / "o"), "--layout", "imagenet"]) == 2
    assert "image folder" in capsys.readouterr().err


def test_a_list_option_before_the_paths_says_it_took_them(array_input, capsys) -> None:
    """``--corruptions fog IN OUT`` took IN and OUT as corruption names: the error said only that IN and OUT were
    missing; it now names the option that took them and the ways out (paths first, or ``--`` after the list)."""
    tmp, _, _ = array_input
    with pytest.raises(SystemExit) as exc:
        main(["corrupt", "--corruptions", "fog", str(tmp / "x.npy"), str(tmp / "o")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"required: input, out (--corruptions took fog {tmp / 'x.npy'} {tmp / 'o'}: " in err
    assert "if some were meant as the positional arguments, give those first or end its list with --" in err
    with pytest.raises(SystemExit):  # one word after it: no hint, the paths were never given
        main(["corrupt", "--corruptions", "fog"])
    assert " took " not in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an abbreviation argparse accepts is the option too
        main(["corrupt", "--corr", "fog", str(tmp / "x.npy"), str(tmp / "o")])
    assert f"(--corruptions took fog {tmp / 'x.npy'} {tmp / 'o'}: " in capsys.readouterr().err
    assert main(["corrupt", "--corruptions", "fog", "--severities", "1", "--no-progress", "--", str(tmp / "x.npy"),
                 str(tmp / "o")]) == 0
    assert np.load(tmp / "o" / "fog.npy").shape[0] == np.load(tmp / "x.npy").shape[0]


def test_cli_usage_errors_write_nothing_that_binds_a_fix(array_input, folder_input, capsys) -> None:
    """A misspelt device, repeated severities and --size 0 are usage errors (exit 2, naming the option) refused before
    any manifest binds the corrected run; output files get the umask's mode (they were all 0600)."""
    tmp, _, _ = array_input
    base = ["corrupt", str(tmp / "x.npy"), str(tmp / "o"), "--corruptions", "fog", "--no-progress"]
    assert main([*base, "--severities", "1", "--device", "gpu"]) == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err
    assert main([*base, "--severities", "2", "2"]) == 2
    assert "severities [2, 2] repeat a value" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a set aprkit eval could not regenerate (its seeds are 0..2**63-1)
        main([*base, "--seed", "-1"])
    assert "argument --seed: expected a seed in 0..2**63-1, got '-1'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["corrupt", str(folder_input), str(tmp / "f"), "--size", "0", "--corruptions", "fog", "--severities", "1",
              "--no-progress"])
    assert exc.value.code == 2 and "--size" in capsys.readouterr().err
    assert main([*base, "--severities", "1", "--quality", "90"]) == 2  # it was accepted and ignored
    assert "--quality sets the JPEG quality of the imagenet layout" in capsys.readouterr().err
    assert main(["corrupt", str(folder_input), str(tmp / "f"), "--quality", "101", "--corruptions", "fog",
                 "--severities", "1", "--no-progress"]) == 2
    assert "expected a JPEG quality in 1..100" in capsys.readouterr().err
    assert not (tmp / "o" / "manifest.json").exists()  # refused before the manifest: nothing binds the fixed run
    for mask, mode in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(mask)
        try:
            assert main([*base, "--severities", "1", "--overwrite"]) == 0
        finally:
            os.umask(old)
        assert (os.stat(tmp / "o" / "fog.npy").st_mode & 0o777) == mode


def _run(tmp, out: str, *extra: str) -> int:
    return main(["corrupt", str(tmp / "x.npy"), str(tmp / out), "--corruptions", "gaussian_noise", "--severities", "1",
                 "--no-progress", *extra])


@pytest.mark.parametrize("bad", ["-5", "0", "two"])
def test_cli_rejects_non_positive_batch_size(array_input, capsys, bad: str) -> None:
    tmp, _, _ = array_input
    with pytest.raises(SystemExit) as exc:
        _run(tmp, "o", "--batch-size", bad)
    assert exc.value.code == 2 and "positive integer" in capsys.readouterr().err
    assert not (tmp / "o").exists()
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        write_cifar_c(np.zeros((2, 8, 8, 3), np.uint8), tmp / "o", ["fog"], batch_size=int(bad) if bad != "two" else "2",
                      progress=False)


def test_cli_refuses_empty_input(tmp_path, capsys) -> None:
    np.save(tmp_path / "x.npy", np.zeros((0, 32, 32, 3), np.uint8))
    assert _run(tmp_path, "o") == 2
    assert "no images" in capsys.readouterr().err
    assert not (tmp_path / "o" / "gaussian_noise.npy").exists()
    with pytest.raises(ValueError, match="empty"):
        write_cifar_c(np.zeros((0, 8, 8, 3), np.uint8), tmp_path / "o", ["fog"], progress=False)


def test_manifest_records_parameters_and_refuses_a_mismatch(array_input, capsys) -> None:
    tmp, x, _ = array_input
    assert _run(tmp, "o", "--seed", "1") == 0
    manifest = json.loads((tmp / "o" / "manifest.json").read_text())
    assert manifest["params"]["seed"] == 1 and manifest["params"]["preset"] == "cifar"
    assert manifest["params"]["severities"] == [1] and manifest["params"]["code_version"] == BASE_VERSION
    assert manifest["params"]["input"]["shape"] == list(x.shape) and manifest["complete"] == ["gaussian_noise.npy"]
    first = (tmp / "o" / "gaussian_noise.npy").read_bytes()
    for extra in (["--seed", "2"], ["--seed", "1", "--preset", "tinyimagenet"]):
        assert _run(tmp, "o", *extra) == 2
        err = capsys.readouterr().err
        assert "other generation parameters" in err and "--overwrite" in err
    np.save(tmp / "x.npy", x[::-1].copy())  # other images, same shape
    assert _run(tmp, "o", "--seed", "1") == 2
    assert "input" in capsys.readouterr().err
    assert (tmp / "o" / "gaussian_noise.npy").read_bytes() == first  # nothing was touched
    assert _run(tmp, "o", "--seed", "1", "--overwrite") == 0
    assert (tmp / "o" / "gaussian_noise.npy").read_bytes() != first
    assert json.loads((tmp / "o" / "manifest.json").read_text())["params"]["input"] != manifest["params"]["input"]


def test_only_files_complete_under_the_manifest_are_skipped(array_input, capsys) -> None:
    tmp, x, _ = array_input
    out = tmp / "o"
    out.mkdir()
    np.save(out / "gaussian_noise.npy", np.zeros((6, 32, 32, 3), np.uint8))  # right shape, no manifest
    assert _run(tmp, "o") == 2
    assert "without a manifest.json" in capsys.readouterr().err
    assert _run(tmp, "o", "--overwrite") == 0
    assert np.load(out / "gaussian_noise.npy").any()
    # an array the manifest does not list as complete (e.g. left by another run) is recomputed
    good = np.load(out / "gaussian_noise.npy")
    data = json.loads((out / "manifest.json").read_text())
    data["complete"] = []
    (out / "manifest.json").write_text(json.dumps(data))
    np.save(out / "gaussian_noise.npy", np.zeros((6, 32, 32, 3), np.uint8))
    assert _run(tmp, "o") == 0
    assert np.array_equal(np.load(out / "gaussian_noise.npy"), good)


def test_imagenet_layout_manifest(folder_input, tmp_path, capsys) -> None:
    out = tmp_path / "inc"
    argv = ["corrupt", str(folder_input), str(out), "--corruptions", "fog", "--severities", "1", "--size", "32",
            "--no-progress"]
    assert main(argv) == 0
    params = json.loads((out / "manifest.json").read_text())["params"]
    assert params["layout"] == "imagenet" and params["size"] == 32 and params["input"]["files"] == 4
    assert main(argv + ["--quality", "50"]) == 2
    assert "quality" in capsys.readouterr().err
    assert main(argv[:-3] + ["--size", "24", "--no-progress"]) == 2


def test_labels_must_be_integers(array_input) -> None:
    tmp, x, labels = array_input
    with pytest.raises(TypeError, match="labels must be integers"):
        write_cifar_c(x, tmp / "o", ["fog"], labels.astype(np.float32) + 0.5, progress=False)


def test_overwrite_removes_the_replaced_runs_outputs(array_input, capsys) -> None:
    """``--overwrite`` replaces the run: arrays of corruptions it no longer writes (made from the old images) go, so
    no reader can pair them with the new labels."""
    tmp, x, labels = array_input
    argv = ["corrupt", str(tmp / "x.npy"), str(tmp / "o"), "--severities", "1", "--no-progress"]
    assert main([*argv, "--corruptions", "contrast", "fog", "--labels", str(tmp / "y.npy")]) == 0
    assert main([*argv, "--corruptions", "fog", "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp / "o").iterdir()) == ["fog.npy", "manifest.json"]


def test_overwrite_with_the_same_parameters_redoes_only_its_outputs(array_input, folder_input, tmp_path) -> None:
    """--overwrite to redo one corruption of a finished folder deleted every other corruption without a word
    (corruptions reviewer); with the same parameters and input the others stay, listed complete."""
    from aprkit.data.corrupted import available_corruptions

    tmp, x, labels = array_input
    argv = ["corrupt", str(tmp / "x.npy"), str(tmp / "o"), "--severities", "1", "--labels", str(tmp / "y.npy"),
            "--no-progress"]
    assert main([*argv, "--corruptions", "contrast", "fog"]) == 0
    kept = (tmp / "o" / "contrast.npy").read_bytes()
    assert main([*argv, "--corruptions", "fog", "--overwrite"]) == 0
    data = json.loads((tmp / "o" / "manifest.json").read_text())
    assert sorted(data["complete"]) == ["contrast.npy", "fog.npy", "labels.npy"]
    assert (tmp / "o" / "contrast.npy").read_bytes() == kept
    folder = ["corrupt", str(folder_input), str(tmp_path / "f"), "--severities", "1", "--size", "32", "--no-progress"]
    assert main([*folder, "--corruptions", "fog", "contrast"]) == 0
    assert main([*folder, "--corruptions", "fog", "--overwrite"]) == 0
    assert sorted(available_corruptions(tmp_path / "f")) == ["contrast", "fog"]


def test_nested_folders_sort_as_the_reader_reads_them(tmp_path) -> None:
    """cat/a/b/1.png and cat/a-b/2.png: the reader sorts by folder text ("a-b" before "a/b"), the order check
    compared paths part by part and refused the input with a self-contradicting message (corruptions reviewer)."""
    imgs = natural_images(3, 32, seed=4).permute(0, 2, 3, 1).numpy()
    for img, where in zip(imgs, ["cat/a/b/1.png", "cat/a-b/2.png", "dog/3.png"]):
        (tmp_path / "in" / where).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "in" / where)
    assert main(["corrupt", str(tmp_path / "in"), str(tmp_path / "o"), "--corruptions", "fog", "--severities", "1",
                 "--size", "32", "--no-progress"]) == 0


def test_input_edited_in_place_is_noticed(folder_input, tmp_path, capsys) -> None:
    """An image edited without changing its size (any uncompressed format) changes the input fingerprint."""
    argv = ["corrupt", str(folder_input), str(tmp_path / "inc"), "--corruptions", "fog", "--severities", "1",
            "--size", "32", "--no-progress"]
    assert main(argv) == 0
    path = next(folder_input.glob("*/*.png"))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # edited (same size)
    assert main(argv) == 2
    assert "input" in capsys.readouterr().err


def test_inputs_mapping_to_one_output_are_refused(folder_input, tmp_path, capsys) -> None:
    img = np.asarray(Image.open(next(folder_input.glob("cat/*.png"))))
    Image.fromarray(img).save(folder_input / "cat" / "im1.bmp")  # im1.png and im1.bmp would both be im1.JPEG
    assert main(["corrupt", str(folder_input), str(tmp_path / "inc"), "--corruptions", "fog", "--severities", "1",
                 "--size", "32", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "more than one input image" in err and "im1.JPEG" in err


def test_cli_refuses_options_that_would_be_ignored(array_input, folder_input, tmp_path, capsys) -> None:
    tmp, _, _ = array_input
    assert main(["corrupt", str(tmp / "x.npy"), str(tmp / "o"), "--size", "16", "--no-progress"]) == 2
    assert "--size resizes images read from a folder" in capsys.readouterr().err
    assert main(["corrupt", str(folder_input), str(tmp_path / "inc"), "--labels", str(tmp / "y.npy"),
                 "--no-progress"]) == 2
    assert "--labels is only for array input" in capsys.readouterr().err


def test_writers_default_to_the_preset_of_the_image_size(tmp_path, capsys) -> None:
    """A 64-px array (Tiny-ImageNet) gets the tinyimagenet parameters, as the eval's generated cells do; a folder
    written at --size 32 the cifar ones, and with size=None the preset of its images' size."""
    x = natural_images(3, 64).permute(0, 2, 3, 1).numpy().copy()
    np.save(tmp_path / "x64.npy", x)
    assert main(["corrupt", str(tmp_path / "x64.npy"), str(tmp_path / "o"), "--corruptions", "pixelate",
                 "--severities", "5", "--no-progress"]) == 0
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["params"]["preset"] == "tinyimagenet"
    seeds = item_seeds(0, "pixelate", 5, "tinyimagenet", range(3))
    want = corrupt(torch.from_numpy(x).permute(0, 3, 1, 2), "pixelate", 5, "tinyimagenet", seeds=seeds)
    assert np.array_equal(np.load(tmp_path / "o" / "pixelate.npy"), want.permute(0, 2, 3, 1).numpy())
    src = tmp_path / "src" / "cls"
    src.mkdir(parents=True)
    for i, img in enumerate(x):
        Image.fromarray(img).save(src / f"{i}.png")
    for size, preset in ((32, "cifar"), (None, "tinyimagenet"), (224, "imagenet")):
        out = tmp_path / f"inc{size}"
        with warnings.catch_warnings(record=True) as seen:  # 64 px enlarged to 224 (ImageNet-C's default) says so
            warnings.simplefilter("always")
            write_imagenet_c(tmp_path / "src", out, ["contrast"], severities=(1,), size=size, progress=False)
        assert sum("is enlarged 3.5x" in str(w.message) for w in seen) == (size == 224)
        assert json.loads((out / "manifest.json").read_text())["params"]["preset"] == preset


def _textures(root, seed: int):
    """Five drawable frost textures (and the sixth file the scripts ship) of random content."""
    from aprkit.corruptions._frost import FROST_FILES

    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in FROST_FILES:
        Image.fromarray(rng.integers(0, 256, (180, 200, 3), dtype=np.uint8)).save(root / name)
    return root


def test_manifest_records_frost_textures_device_and_versions(array_input, tmp_path) -> None:
    """A rerun with other frost textures (wherever they lie), on another device type or with other library versions
    is refused; the textures count only for the frost outputs; a manifest without these fields (an older aprkit) is
    refused with a message, not a crash."""
    import shutil

    import PIL

    _, x, _ = array_input
    a, b = _textures(tmp_path / "a", 0), _textures(tmp_path / "b", 1)
    out = tmp_path / "o"

    def run(frost_dir, names=("contrast", "frost")):
        return write_cifar_c(x, out, list(names), severities=(1,), frost_dir=frost_dir, progress=False)

    assert len(run(a)) == 2
    data = json.loads((out / "manifest.json").read_text())
    assert data["params"]["device"] == {"type": "cpu"}
    assert data["params"]["versions"]["torch"] == torch.__version__
    assert data["params"]["versions"]["pillow"] == PIL.__version__
    digest = data["depends"]["frost.npy"]["frost_textures"]
    assert data["info"]["frost_dir"] == str(a.resolve()) and "contrast.npy" not in data["depends"]
    first = (out / "frost.npy").read_bytes()
    with pytest.raises(ValueError, match=r"lists frost.npy as made from other inputs .*frost_textures: '"
                                         rf"{digest}' there, '[0-9a-f]+' now.*--overwrite"):
        run(b)
    assert (out / "frost.npy").read_bytes() == first
    shutil.copytree(a, tmp_path / "moved")
    assert run(tmp_path / "moved") == []  # the same textures elsewhere: resumed
    assert run(b, ["contrast"]) == []  # no frost output written: the textures do not matter
    for key, value in (("device", {"type": "cuda", "allow_tf32": True, "matmul_precision": "high"}),
                       ("versions", {**data["params"]["versions"], "torch": "0.0"})):
        edited = json.loads(json.dumps(data))
        edited["params"][key] = value
        (out / "manifest.json").write_text(json.dumps(edited))
        with pytest.raises(ValueError, match=f"other generation parameters .*{key}: "):
            run(a)
    older = json.loads(json.dumps(data))
    del older["params"]["device"], older["params"]["versions"], older["depends"]
    (out / "manifest.json").write_text(json.dumps(older))
    with pytest.raises(ValueError, match=r"device: not recorded \(an older aprkit\) there, \{'type': 'cpu'\} now"):
        run(a)


def test_a_full_disk_names_the_jpeg_being_written(folder_input, tmp_path, monkeypatch) -> None:
    """PIL's short write on a full disk said only "[Errno 28] No space left on device" (writer tester)."""
    import errno

    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    out = tmp_path / "inc"
    with pytest.raises(OSError, match=r"could not write .*inc/contrast/1/.*\.JPEG: No space left on device; is the "
                                      r"disk full\?") as err:
        write_imagenet_c(folder_input, out, ["contrast"], severities=(1,), size=32, progress=False)
    assert err.value.errno == errno.ENOSPC and not list(out.rglob("*.tmp"))


def test_imagenet_layout_refuses_a_resume_with_other_frost_textures(folder_input, tmp_path) -> None:
    a, b = _textures(tmp_path / "a", 0), _textures(tmp_path / "b", 1)
    out = tmp_path / "inc"
    write_imagenet_c(folder_input, out, ["frost"], severities=(2,), size=32, frost_dir=a, progress=False)
    data = json.loads((out / "manifest.json").read_text())
    data["complete"] = []  # interrupted: frost/2 begun, not complete
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="lists frost/2 as made from other inputs"):
        write_imagenet_c(folder_input, out, ["frost"], severities=(2,), size=32, frost_dir=b, progress=False)
    assert data["params"]["versions"]["torchvision"]  # its decoders read the images


def test_a_set_written_before_a_one_corruption_change_resumes_for_the_others(tmp_path, monkeypatch):
    """Outputs are keyed by their corruption's own version: a set written before a change to zoom blur only keeps
    its other corruptions and accepts new ones (the whole set had been refused)."""
    import aprkit.corruptions.api as api
    from aprkit.corruptions.dataset import write_cifar_c

    x = natural_images(4, 32, seed=3).permute(0, 2, 3, 1).numpy()
    monkeypatch.setattr(api, "_VERSIONS", {})
    monkeypatch.setattr("aprkit.corruptions.dataset.corruption_version", lambda n: 7)
    write_cifar_c(x, tmp_path, ["gaussian_noise"], severities=[1], progress=False)
    monkeypatch.setattr("aprkit.corruptions.dataset.corruption_version", lambda n: 8 if n == "zoom_blur" else 7)
    write_cifar_c(x, tmp_path, ["gaussian_noise", "zoom_blur"], severities=[1], progress=False)
    assert (tmp_path / "zoom_blur.npy").is_file()


def test_a_run_that_stopped_before_its_first_corruption_is_replaced_without_overwrite(array_input, monkeypatch) -> None:
    """Its manifest lists only the label file: a rerun with other parameters starts afresh instead of asking for
    --overwrite (nothing would be lost); a folder with a corruption done is still refused."""
    import aprkit.corruptions.dataset as dataset

    tmp, x, labels = array_input

    def broken(*args, **kwargs):
        raise RuntimeError("stopped")

    with monkeypatch.context() as m:
        m.setattr(dataset, "corrupt", broken)
        with pytest.raises(RuntimeError, match="stopped"):
            write_cifar_c(x, tmp / "o", ["fog"], labels, [1], seed=1, progress=False)
    assert json.loads((tmp / "o" / "manifest.json").read_text())["complete"] == ["labels.npy"]
    assert write_cifar_c(x, tmp / "o", ["fog"], labels, [1, 2], seed=2, progress=False) == [tmp / "o" / "fog.npy"]
    data = json.loads((tmp / "o" / "manifest.json").read_text())
    assert data["params"]["seed"] == 2 and sorted(data["complete"]) == ["fog.npy", "labels.npy"]
    assert np.load(tmp / "o" / "labels.npy").shape == (2 * len(labels),)
    with pytest.raises(ValueError, match="other generation parameters"):
        write_cifar_c(x, tmp / "o", ["fog"], labels, [1, 2], seed=3, progress=False)


def test_writers_read_the_source_tree_as_the_image_folder_datasets_do(tmp_path) -> None:
    """A hidden folder (.ipynb_checkpoints) was a class to the writers and shifted every label by one; a .gif was
    left out and a folder named like an image was read as one. The writers now share the datasets' scan."""
    from aprkit.corruptions.dataset import load_image_folder, scan_image_folder
    from aprkit.data import get_dataset

    src = tmp_path / "src"
    imgs = natural_images(4, 32, seed=3).permute(0, 2, 3, 1).numpy()
    for i, img in enumerate(imgs):
        d = src / ("bird" if i < 2 else "cat")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / (f"im{i}.gif" if i == 3 else f"im{i}.png"))
    (src / ".ipynb_checkpoints").mkdir()
    (src / "bird" / "folder.png").mkdir()
    items, classes = scan_image_folder(src)
    clean = get_dataset(f"folder:{src}")
    assert classes == ["bird", "cat"] and [c for _, c in items] == [0, 0, 1, 1] == [int(y) for _, y in clean]
    images, labels = load_image_folder(src, 32)
    assert labels.tolist() == [0, 0, 1, 1]
    # images already at the size are kept: a -C set of them is a corrupted copy of the clean images
    assert all(np.array_equal(images[i], clean[i][0].permute(1, 2, 0).numpy()) for i in range(3))


def test_size_follows_torchvisions_resize_and_centre_crop(tmp_path) -> None:
    """The ImageNet-C protocol (Resize(256) + CenterCrop(224) on the PIL image, at SIZE * 256 / 224); the cifar
    layout resizes the short side to SIZE. 32-px images were zoomed to 37 px and cropped back."""
    from torchvision import transforms as T

    from aprkit.corruptions.dataset import _load

    path = tmp_path / "a.png"
    Image.fromarray(natural_images(1, 61, seed=2)[0].permute(1, 2, 0).numpy()[:, :45]).save(path)
    img = Image.open(path).convert("RGB")
    assert np.array_equal(_load(path, 28), np.asarray(T.Compose([T.Resize(32), T.CenterCrop(28)])(img)))
    assert np.array_equal(_load(path, 28, zoom=False), np.asarray(T.Compose([T.Resize(28), T.CenterCrop(28)])(img)))


def test_imagenet_layout_writes_every_class_folder(tmp_path) -> None:
    """A class folder without images got no output folder, and the -C reader's labels then shifted."""
    src = tmp_path / "src"
    for cls in ("a", "b", "c"):
        (src / cls).mkdir(parents=True)
    for i, cls in enumerate(("a", "c")):
        Image.fromarray(natural_images(1, 24, seed=i)[0].permute(1, 2, 0).numpy()).save(src / cls / "x.png")
    write_imagenet_c(src, tmp_path / "o", ["contrast"], [1], size=None, progress=False)
    assert sorted(p.name for p in (tmp_path / "o" / "contrast" / "1").iterdir()) == ["a", "b", "c"]


def test_a_second_run_into_a_folder_being_written_is_refused(array_input, monkeypatch) -> None:
    """While a run computes its first corruption its manifest lists only the label file: a second run with other
    parameters took the folder over (deleting the first run's labels); the folder's lock refuses it."""
    import aprkit.corruptions.dataset as dataset

    tmp, x, labels = array_input
    real = dataset.corrupt
    seen = []

    def second_run_meanwhile(*args, **kwargs):
        if not seen:
            seen.append(1)
            with pytest.raises(ValueError, match="another run is writing into"):
                write_cifar_c(x, tmp / "o", ["fog"], labels, [1], seed=2, progress=False)
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "corrupt", second_run_meanwhile)
    write_cifar_c(x, tmp / "o", ["fog"], labels, [1], seed=1, progress=False)
    data = json.loads((tmp / "o" / "manifest.json").read_text())
    assert seen and data["params"]["seed"] == 1 and (tmp / "o" / "labels.npy").exists()
    monkeypatch.setattr(dataset, "corrupt", real)
    write_cifar_c(x, tmp / "o", ["contrast"], labels, [1], seed=1, progress=False)  # the lock was released


def test_imagenet_layout_overwrite_leaves_no_empty_corruption_folder(folder_input, tmp_path) -> None:
    """An emptied contrast/ stayed and read as a corruption that is there (tester)."""
    from aprkit.data.corrupted import available_corruptions

    argv = ["corrupt", str(folder_input), str(tmp_path / "o"), "--severities", "1", "--size", "32", "--no-progress"]
    assert main([*argv, "--corruptions", "fog", "contrast"]) == 0
    assert main([*argv, "--corruptions", "fog", "--seed", "3", "--overwrite"]) == 0
    assert available_corruptions(tmp_path / "o") == ["fog"] and not (tmp_path / "o" / "contrast").exists()


def test_a_mixed_folder_is_resized_throughout_as_its_reader_takes_it(tmp_path) -> None:
    """A size x size image beside larger ones was kept while folder:DIR?resize=...&crop=... zooms it: its corrupted
    file showed another crop than the clean image it is paired with (tester); a folder of size x size images only
    is still kept as it is."""
    from aprkit.data import get_dataset

    imgs = natural_images(4, 48, seed=2).permute(0, 2, 3, 1).numpy()
    for i, img in enumerate(imgs):
        (tmp_path / "in" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img if i % 2 else img[:32, :32].copy()).save(tmp_path / "in" / "a" / f"im{i}.png")
    write_imagenet_c(tmp_path / "in", tmp_path / "out", ["brightness"], [1], size=32, progress=False)
    clean = get_dataset(f"folder:{tmp_path / 'in'}?resize={round(32 * 256 / 224)}&crop=32")
    done = get_dataset(f"imagenet-c:{tmp_path / 'out'}", corruption="brightness", severity=1)
    x = torch.stack([clean[i][0] for i in range(4)])
    ref = corrupt(x, "brightness", 1, "cifar", seeds=item_seeds(0, "brightness", 1, "cifar", range(4)))  # 32 px
    for i in range(4):  # the same JPEG of the same crop
        buf = io.BytesIO()
        Image.fromarray(ref[i].permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=85)
        jpeg = torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1)
        assert (done[i][0].int() - jpeg.int()).abs().float().mean() < 2, i  # another crop: 10+ levels


def test_an_aprkit_written_imagenet_c_folder_is_told_from_the_published_files(tmp_path) -> None:
    """mCE from a folder aprkit corrupt wrote is no published ImageNet-C figure: the corruption suite tells such a
    folder (its manifest) from a download, whose mCE note stays empty."""
    import shutil

    from aprkit.eval.suites.corruption import _written_by_aprkit

    for i, img in enumerate(natural_images(2, 32, seed=3).permute(0, 2, 3, 1).numpy()):
        (tmp_path / "in" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "in" / "a" / f"im{i}.png")
    write_imagenet_c(tmp_path / "in", tmp_path / "out", ["brightness"], [1], size=32, progress=False)
    assert _written_by_aprkit(f"imagenet-c:{tmp_path / 'out'}")
    shutil.copytree(tmp_path / "out" / "brightness", tmp_path / "download" / "brightness")
    assert not _written_by_aprkit(f"imagenet-c:{tmp_path / 'download'}")


def test_an_on_disk_c_set_lacking_requested_cells_is_refused_before_any_work(array_input) -> None:
    """A -C folder without snow failed at the snow cell, after the clean pass and every fog cell had run (on a full
    CIFAR-10-C grid, after every cell before the missing file); the grid is checked against the files first."""
    from aprkit.data.corrupted import check_cells_present
    from aprkit.eval import evaluate
    from aprkit.models import create_model

    tmp, x, labels = array_input
    with pytest.warns(UserWarning, match="severities"):
        write_cifar_c(x[:4], tmp / "c", ["fog"], labels[:4], severities=[1, 3], progress=False)
    with pytest.raises(FileNotFoundError, match=r"lacks 2 of the 3 requested cells \(fog-2, snow-1\): fog\.npy holds "
                                                r"severities \[1, 3\], not 2; snow\.npy is missing; expected the CIFAR-C"):
        check_cells_present(tmp / "c", [("fog", 1), ("fog", 2), ("snow", 1)], "cifar")
    data = torch.utils.data.TensorDataset(torch.as_tensor(x[:4]).permute(0, 3, 1, 2).contiguous(),
                                          torch.as_tensor(labels[:4]))
    with pytest.raises(FileNotFoundError, match=r"lacks 2 of the 4 requested cells \(snow-1, snow-3\): snow\.npy"):
        evaluate(create_model("small_cnn", num_classes=10), "corruption", data, progress=False,
                 options={"corrupted": f"cifar10-c:{tmp / 'c'}", "corruptions": ["fog", "snow"], "severities": [1, 3]})


def test_inputs_it_cannot_read_and_bad_severities_are_named_early(array_input, folder_input, tmp_path, capsys):
    """Corruptions tester: `aprkit corrupt cifar10:ROOT` said the input "does not exist"; folder:DIR was refused the
    same way; --severities 6 was refused only after the whole folder was decoded; a non-image file's header error
    was PIL's bare text; negative labels were written and then refused by the reader; the preset went unsaid."""
    d, _, _ = array_input
    src = folder_input
    out = tmp_path / "out"
    assert main(["corrupt", f"cifar10:{d}", str(out), "--corruptions", "contrast"]) == 2
    assert "not the data spec 'cifar10:" in capsys.readouterr().err and not out.exists()
    for spec, said in (("folder:", "needs a root folder"), (f"folder:{src}?resize=40", "takes no reader options")):
        assert main(["corrupt", spec, str(out), "--corruptions", "contrast"]) == 2  # (folder: read the current folder)
        assert said in capsys.readouterr().err and not out.exists()
    assert main(["corrupt", str(d / "x.npy"), str(out), "--corruptions", "contrast", "--severities", "6"]) == 2
    assert "--severities 6: severity must be an integer 1-5" in capsys.readouterr().err
    assert main(["corrupt", str(d / "x.npy"), str(out), "--corruptions", "contrast", "--severities", "1",
                 "--labels", str(d / "y.npy"), "--no-progress"]) == 0
    assert "the cifar preset, seed 0" in capsys.readouterr().out
    assert main(["corrupt", f"folder:{src}", str(tmp_path / "f"), "--corruptions", "contrast", "--severities", "1",
                 "--size", "32", "--no-progress"]) == 0
    (src / next(p.name for p in src.iterdir() if p.is_dir()) / "bad.png").write_text("not an image")
    assert main(["corrupt", str(src), str(tmp_path / "g"), "--corruptions", "contrast", "--severities", "1",
                 "--size", "32", "--no-progress"]) == 2
    assert "expected an intact image file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="labels must be class indices >= 0, got -1"):
        write_cifar_c(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "neg", ["contrast"], np.array([0, -1]), [1])
