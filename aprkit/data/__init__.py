"""Datasets and readers. Every dataset yields ``(image uint8 tensor (C, H, W), int label)``.

Public names are imported lazily from their modules on first access.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

#: public name -> module that defines it (each area adds its own lines)
_EXPORTS: dict[str, str] = {
    "get_dataset": "aprkit.data.registry",
    "has_splits": "aprkit.data.registry",
    "parse_spec": "aprkit.data.registry",
    "DATASET_KINDS": "aprkit.data.registry",
    "iter_batches": "aprkit.data.loading",
    "collate_uint8": "aprkit.data.loading",
    "subset": "aprkit.data.subsets",
    "first_n": "aprkit.data.subsets",
    "SubsetDataset": "aprkit.data.subsets",
    "SeededTransform": "aprkit.data.seeded",
    "dataset_tensors": "aprkit.data.loading",
    "to_array_dataset": "aprkit.data.loading",
    "batch_source": "aprkit.data.subsets",
    "ArrayDataset": "aprkit.data.arrays",
    "NO_LABEL": "aprkit.data.arrays",
    "ImageFolderDataset": "aprkit.data.folder",
    "ImageListDataset": "aprkit.data.folder",
    "read_image": "aprkit.data.folder",
    "cifar_dataset": "aprkit.data.cifar",
    "CIFAR10_CLASSES": "aprkit.data.cifar",
    "CIFAR100_CLASSES": "aprkit.data.cifar",
    "cifar_c": "aprkit.data.corrupted",
    "imagenet_c": "aprkit.data.corrupted",
    "available_corruptions": "aprkit.data.corrupted",
    "NoiseDataset": "aprkit.data.noise",
    "NOISE_KINDS": "aprkit.data.noise",
    "CueConflict": "aprkit.data.cue_conflict",
    "CUE_CONFLICT_CATEGORIES": "aprkit.data.cue_conflict",
    "parse_stimulus_name": "aprkit.data.cue_conflict",
    "scan_cue_conflict": "aprkit.data.cue_conflict",
    "write_synthetic_cue_conflict": "aprkit.data.cue_conflict",
    "SyntheticShapes": "aprkit.data.synthetic",
    "make_synthetic": "aprkit.data.synthetic",
    "make_cue_conflict": "aprkit.data.synthetic",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
