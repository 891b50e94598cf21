"""The cue-conflict loader: file-name parser, generated trees in the published layout, bad folders, ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aprkit.data.cue_conflict import (
    CUE_CONFLICT_CATEGORIES,
    CueConflict,
    parse_stimulus_name,
    scan_cue_conflict,
    write_synthetic_cue_conflict,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("knife1-airplane1.png", ("knife", "airplane")),
        ("knife10-oven3.png", ("knife", "oven")),
        ("knife6-knife1.png", ("knife", "knife")),
        ("cue-conflict/knife/knife1-airplane1.png", ("knife", "airplane")),
        (Path("a/bear12-dog100.png"), ("bear", "dog")),
    ],
)
def test_parse_stimulus_name(name, expected):
    assert parse_stimulus_name(name) == expected


@pytest.mark.parametrize(
    "name", ["knife-airplane1.png", "knife1_airplane1.png", "knife1-airplane1.jpg", "Knife1-airplane1.png",
             "knife1-airplane.png", "knife1-airplane1-x2.png", "", "knife1airplane1.png"],
)
def test_parse_rejects_malformed_names(name):
    with pytest.raises(ValueError, match="expected '<shape>N-<texture>M.png'"):
        parse_stimulus_name(name)


def test_parse_type_error():
    with pytest.raises(TypeError, match="str or path"):
        parse_stimulus_name(3)


def test_loader_on_a_generated_tree(tmp_path):
    paths = write_synthetic_cue_conflict(tmp_path, per_shape=3, size=8, seed=1)
    assert len(paths) == 48 and all(p.parent.name == parse_stimulus_name(p)[0] for p in paths)
    ds = CueConflict(tmp_path)
    assert len(ds) == 48 and ds.categories == CUE_CONFLICT_CATEGORIES
    img, label = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 8, 8)
    for i, s in enumerate(ds.stimuli):
        shape, texture = parse_stimulus_name(s.path.name)
        assert s.path.parent.name == shape
        assert ds.shape_labels[i] == CUE_CONFLICT_CATEGORIES.index(shape) == s.shape_label
        assert ds.texture_labels[i] == CUE_CONFLICT_CATEGORIES.index(texture) == s.texture_label
    assert ds[5][1] == int(ds.shape_labels[5])
    assert sum(not s.conflicting for s in ds.stimuli) == 16  # one same-class stimulus per folder
    only = CueConflict(tmp_path, conflicting_only=True)
    assert len(only) == 32 and bool((only.shape_labels != only.texture_labels).all())
    assert only.cache_id != ds.cache_id and "48" in ds.cache_id
    # deterministic generator and the decoded pixels match what was written
    from PIL import Image
    import numpy as np

    first = torch.from_numpy(np.array(Image.open(ds.stimuli[0].path).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(ds[0][0], first)
    other = tmp_path / "again"
    again = write_synthetic_cue_conflict(other, per_shape=3, size=8, seed=1)
    assert [p.relative_to(other) for p in again] == [p.relative_to(tmp_path) for p in paths]
    assert again[7].read_bytes() == paths[7].read_bytes()


def test_transform_and_hidden_files(tmp_path):
    write_synthetic_cue_conflict(tmp_path, per_shape=1, size=8)
    (tmp_path / ".DS_Store").write_text("x")
    (tmp_path / "cat" / ".hidden.png").write_text("x")
    ds = CueConflict(tmp_path, transform=lambda x: x[:1])
    assert len(ds) == 16 and ds[0][0].shape == (1, 8, 8)


def test_bad_folder_lists_every_problem(tmp_path):
    write_synthetic_cue_conflict(tmp_path, per_shape=1, size=8)
    (tmp_path / "kat").mkdir()
    (tmp_path / "kat" / "kat1-dog1.png").write_bytes(b"")
    (tmp_path / "dog" / "dog_1.png").write_bytes(b"")
    (tmp_path / "dog" / "dog2-zebra2.png").write_bytes(b"")
    (tmp_path / "dog" / "cat3-bear1.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError) as err:
        scan_cue_conflict(tmp_path)
    msg = str(err.value)
    assert "5 problem(s)" in msg
    assert "kat/: unknown shape category (did you mean 'cat'" in msg
    assert "dog/dog_1.png: malformed name" in msg
    assert "dog/dog2-zebra2.png: unknown texture category 'zebra'" in msg
    assert "dog/cat3-bear1.png: shape 'cat' in the name disagrees with the folder 'dog'" in msg
    assert "notes.txt: a file at the top level" in msg
    with pytest.raises(ValueError, match="5 problem"):
        CueConflict(tmp_path)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="holds no stimuli"):
        scan_cue_conflict(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CueConflict(tmp_path / "nope")
    with pytest.raises(ValueError, match="per_shape"):
        write_synthetic_cue_conflict(tmp_path, per_shape=0)


def test_loader_on_the_shared_stimuli(cue_conflict_dir):
    ds = CueConflict(cue_conflict_dir)
    assert len(ds) == 160
    assert {s.path.parent.name for s in ds.stimuli} == set(CUE_CONFLICT_CATEGORIES)
    assert torch.bincount(ds.shape_labels, minlength=16).tolist() == [10] * 16
    n_same = int((ds.shape_labels == ds.texture_labels).sum())
    assert n_same == 6 and len(CueConflict(cue_conflict_dir, conflicting_only=True)) == 154
    img, label = ds[0]
    assert img.shape == (3, 224, 224) and img.dtype == torch.uint8 and label == 0


def test_get_dataset_cue_conflict_spec(tmp_path) -> None:
    """``get_dataset("cue-conflict:ROOT")`` reads the published layout; a missing root names the folder."""
    import numpy as np
    from PIL import Image

    from aprkit.data import get_dataset

    for shape, texture in (("cat", "dog"), ("dog", "cat")):
        (tmp_path / shape).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / shape / f"{shape}1-{texture}2.png")
    ds = get_dataset(f"cue-conflict:{tmp_path}")
    assert len(ds) == 2 and ds[0][0].shape == (3, 8, 8)
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        get_dataset(f"cue-conflict:{tmp_path / 'does-not-exist'}")


def test_cache_id_names_categories_and_transform(tmp_path):
    """A resized or re-categorised stimulus set must not share cached results with the original."""
    from aprkit.data.cue_conflict import CUE_CONFLICT_CATEGORIES, CueConflict, write_synthetic_cue_conflict

    root = tmp_path / "cc"
    write_synthetic_cue_conflict(root, per_shape=1, size=16)
    plain = CueConflict(root)
    assert CueConflict(root).cache_id == plain.cache_id

    def half(img):
        return img[:, ::2, ::2]

    assert CueConflict(root, half).cache_id is None  # unnamed: caches hash sampled (transformed) items
    half.cache_id = "half"
    assert CueConflict(root, half).cache_id == plain.cache_id + ":transform=half"
    first = list(CUE_CONFLICT_CATEGORIES[:4])
    sub = tmp_path / "sub"
    write_synthetic_cue_conflict(sub, per_shape=1, size=16, categories=first)
    assert CueConflict(sub, categories=first).cache_id.endswith(":" + ",".join(first))
