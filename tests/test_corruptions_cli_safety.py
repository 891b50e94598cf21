"""``aprkit corrupt`` against what users' folders and interruptions do: names whose order changes when renamed, an
output folder inside the input, damaged or foreign files in the output folder, a killed run's temporary files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_corruptions_cli import array_input, folder_input  # noqa: F401 (fixtures)

from aprkit.cli import main
from aprkit.data import get_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(*argv: str) -> int:
    return main(["corrupt", *argv, "--no-progress"])


def test_inputs_whose_renamed_outputs_sort_differently_are_refused(tmp_path, capsys) -> None:
    """img.crop.png sorts before img.png, but img.JPEG before img.crop.JPEG: the -C tree would pair image 0 with the
    clean image 1."""
    for name in ("img.png", "img.crop.png", "z.png"):
        (tmp_path / "src" / ("b" if name == "z.png" else "a")).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (len(name) * 9, 0, 0)).save(tmp_path / "src" / ("b" if name == "z.png" else "a") / name)
    assert _run(str(tmp_path / "src"), str(tmp_path / "o"), "--size", "8", "--corruptions", "brightness",
                "--severities", "1") == 2
    err = capsys.readouterr().err
    assert "sort in another order" in err and "img.crop.png" in err and not (tmp_path / "o" / "brightness").exists()


def test_an_output_folder_inside_the_input_is_refused(folder_input, capsys) -> None:  # noqa: F811
    for out in (folder_input, folder_input / "out"):
        for layout in ("imagenet", "cifar"):
            assert _run(str(folder_input), str(out), "--layout", layout, "--size", "32", "--corruptions", "fog",
                        "--severities", "1") == 2
            assert "inside the input folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder_input.iterdir()) == ["cat", "dog"]


@pytest.mark.parametrize("content", ["{bad json", '{"tool": "other"}', "[1, 2]"])
def test_overwrite_replaces_a_manifest_it_cannot_read(array_input, content, capsys) -> None:  # noqa: F811
    tmp, _, _ = array_input
    out = tmp / "o"
    out.mkdir()
    (out / "manifest.json").write_text(content)
    args = (str(tmp / "x.npy"), str(out), "--labels", str(tmp / "y.npy"), "--corruptions", "contrast",
            "--severities", "1")
    assert _run(*args) == 2 and "--overwrite" in capsys.readouterr().err
    assert _run(*args, "--overwrite") == 0
    assert json.loads((out / "manifest.json").read_text())["complete"] == ["labels.npy", "contrast.npy"]


def test_a_damaged_output_listed_complete_is_written_again(array_input, capsys) -> None:  # noqa: F811
    tmp, _, _ = array_input
    out = tmp / "o"
    args = (str(tmp / "x.npy"), str(out), "--labels", str(tmp / "y.npy"), "--corruptions", "contrast", "fog",
            "--severities", "1", "2")
    assert _run(*args) == 0
    good = {n: (out / n).read_bytes() for n in ("contrast.npy", "fog.npy")}
    (out / "fog.npy").write_bytes(good["fog.npy"][:1000])  # truncated
    (out / "contrast.npy").write_text("garbage\n")  # not an array at all
    capsys.readouterr()
    assert _run(*args) == 0
    assert "wrote 2 arrays" in capsys.readouterr().out
    assert {n: (out / n).read_bytes() for n in good} == good


def test_a_killed_runs_temporary_files_are_removed(array_input) -> None:  # noqa: F811
    tmp, _, _ = array_input
    out = tmp / "o"
    args = (str(tmp / "x.npy"), str(out), "--labels", str(tmp / "y.npy"), "--corruptions", "contrast",
            "--severities", "1")
    assert _run(*args) == 0
    stale = [out / "contrast.npy.k3x9a_zq.tmp", out / "manifest.json.abcdefgh.tmp"]
    for p in stale:
        p.write_bytes(b"x" * 100)
    (out / "notes.txt.abcdefgh.tmp").write_text("not ours")
    assert _run(*args) == 0
    assert not any(p.exists() for p in stale) and (out / "notes.txt.abcdefgh.tmp").exists()


def test_lists_take_commas_groups_mix_and_the_manifest_says_what_was_made(folder_input, tmp_path, capsys) -> None:  # noqa: F811
    out = tmp_path / "o"
    assert _run(str(folder_input), str(out), "--layout", "cifar", "--size", "16", "--corruptions", "extra,fog",
                "contrast", "--severities", "1,3", "5") == 0
    info = json.loads((out / "manifest.json").read_text())
    assert info["params"]["severities"] == [1, 3, 5] and info["info"]["classes"] == ["cat", "dog"]
    assert info["info"]["aprkit"]
    assert {p.stem for p in out.glob("*.npy")} == {"speckle_noise", "gaussian_blur", "spatter", "saturate", "fog",
                                                   "contrast", "labels"}
    assert len(get_dataset(f"cifar10-c:{out}", corruption="fog", severity=3)) == 4
    assert _run(str(folder_input), str(tmp_path / "p"), "--severities", "1,x") == 2
    assert "--severities 1,x: expected whole numbers 1-5" in capsys.readouterr().err


def test_labels_named_when_missing_and_a_set_without_them_warns(array_input, capsys) -> None:  # noqa: F811
    tmp, _, _ = array_input
    assert _run(str(tmp / "x.npy"), str(tmp / "o"), "--labels", str(tmp / "nope.npy"), "--corruptions", "fog") == 2
    assert "--labels" in capsys.readouterr().err
    assert not (tmp / "o").exists()
    with pytest.warns(UserWarning, match="no --labels"):
        assert _run(str(tmp / "x.npy"), str(tmp / "o"), "--corruptions", "contrast", "--severities", "1") == 0


@pytest.mark.filterwarnings("ignore:no --labels")
def test_a_full_disk_is_named_with_the_file(array_input, monkeypatch, capsys) -> None:  # noqa: F811
    tmp, _, _ = array_input

    def short_write(fh, arr, *a, **k):
        raise OSError("6144000 requested and 302976 written")

    monkeypatch.setattr(np, "save", short_write)
    assert _run(str(tmp / "x.npy"), str(tmp / "o"), "--corruptions", "contrast", "--severities", "1") == 2
    err = capsys.readouterr().err
    assert "could not write" in err and "contrast.npy" in err and "disk full" in err
    assert not list((tmp / "o").glob("*.tmp"))


def test_overwrite_without_a_usable_manifest_leaves_no_stale_images(folder_input, tmp_path, capsys) -> None:  # noqa: F811
    """An --overwrite run over a garbled manifest removes this run's old outputs too (an image whose input is gone
    would break the pairing); a refused input leaves the previous tree alone."""
    out = tmp_path / "o"
    args = (str(folder_input), str(out), "--size", "32", "--corruptions", "fog", "--severities", "1")
    assert _run(*args) == 0
    (out / "manifest.json").write_text("{garbled")
    gone = next(folder_input.glob("cat/*.png"))
    gone.unlink()
    assert _run(*args, "--overwrite") == 0
    assert not (out / "fog" / "1" / "cat" / f"{gone.stem}.JPEG").exists()
    assert len(list((out / "fog" / "1").rglob("*.JPEG"))) == 3
    before = sorted((out / "fog" / "1").rglob("*.JPEG"))
    Image.new("RGB", (40, 40)).save(folder_input / "cat" / f"{before[0].stem}.crop.png")  # would sort differently
    capsys.readouterr()
    assert _run(*args, "--overwrite") == 2 and "sort in another order" in capsys.readouterr().err
    assert sorted((out / "fog" / "1").rglob("*.JPEG")) == before


def test_damaged_labels_are_written_again(array_input) -> None:  # noqa: F811
    tmp, _, labels = array_input
    out = tmp / "o"
    args = (str(tmp / "x.npy"), str(out), "--labels", str(tmp / "y.npy"), "--corruptions", "contrast",
            "--severities", "1", "2")
    assert _run(*args) == 0
    (out / "labels.npy").write_bytes(b"garbage")
    assert _run(*args) == 0
    assert np.array_equal(np.load(out / "labels.npy"), np.tile(labels, 2))


def test_an_imagenet_run_that_wrote_no_image_is_replaced_and_a_partial_severity_is_not_read(
        folder_input, tmp_path, monkeypatch, capsys) -> None:  # noqa: F811
    """The ImageNet writer marks a severity begun before its first image: a run stopped there (a crash, a bad option
    inside the corruption) blocked the corrected rerun until --overwrite; and a severity a killed run left part way
    was read as if complete (19 of 30 images)."""
    import aprkit.corruptions.dataset as dataset
    from aprkit.data import imagenet_c

    real = dataset.corrupt
    with monkeypatch.context() as m:
        m.setattr(dataset, "corrupt", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stopped")))
        assert _run(str(folder_input), str(tmp_path / "o"), "--size", "32", "--corruptions", "fog",
                    "--severities", "2") != 0
    assert "stopped" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["started"] == ["fog/2"]
    assert _run(str(folder_input), str(tmp_path / "o"), "--size", "32", "--corruptions", "fog", "--severities", "2",
                "--quality", "95") == 0  # other parameters, nothing written before: no --overwrite needed
    assert len(imagenet_c(tmp_path / "o", "fog", 2)) == 4

    calls = []

    def second_batch_fails(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(dataset, "corrupt", second_batch_fails)
        assert _run(str(folder_input), str(tmp_path / "o"), "--size", "32", "--corruptions", "fog",
                    "--severities", "3", "--quality", "95", "--batch-size", "2") != 0
    assert len(list((tmp_path / "o" / "fog" / "3").rglob("*.JPEG"))) == 2
    with pytest.raises(ValueError, match="unfinished.*fog/3.*run the same aprkit corrupt command"):
        imagenet_c(tmp_path / "o", "fog", 3)
    capsys.readouterr()
    assert _run(str(folder_input), str(tmp_path / "o"), "--size", "32", "--corruptions", "fog", "--severities",
                "3") == 2  # images written: kept, not replaced
    assert "other generation parameters" in capsys.readouterr().err
    assert _run(str(folder_input), str(tmp_path / "o"), "--size", "32", "--corruptions", "fog", "--severities", "3",
                "--quality", "95") == 0
    assert len(imagenet_c(tmp_path / "o", "fog", 3)) == 4


def test_imagenet_severities_are_added_and_reordered_like_corruptions(folder_input, tmp_path) -> None:  # noqa: F811
    """Each severity of the ImageNet layout is its own folder, seeded per (corruption, severity, image): another list
    of severities was refused as other generation parameters, so adding one meant --overwrite (and redoing all)."""
    out = tmp_path / "o"
    base = [str(folder_input), str(out), "--size", "32", "--corruptions", "contrast"]
    assert _run(*base, "--severities", "1", "5") == 0
    first = {p: p.read_bytes() for p in sorted(out.rglob("*.JPEG"))}
    assert _run(*base, "--severities", "5", "1") == 0 and _run(*base, "--severities", "1") == 0
    assert _run(*base, "--severities", "3") == 0
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.JPEG")) if p.parts[-3] != "3"} == first
    data = json.loads((out / "manifest.json").read_text())
    assert "severities" not in data["params"] and sorted(data["complete"]) == ["contrast/1", "contrast/3", "contrast/5"]
    # a folder written before (its manifest records the severities) still resumes
    data["params"]["severities"] = [1, 5]
    (out / "manifest.json").write_text(json.dumps(data))
    assert _run(*base, "--severities", "1", "2") == 0
    assert "severities" not in json.loads((out / "manifest.json").read_text())["params"]
