"""The environment record of a GPU check and the frost-texture fallback.

The GPU machine has no ``imagecorruptions`` (whose data files hold the frost photographs) and no
internet: when no textures are found, :func:`frost_dir_or_synthetic` writes five smooth random
stand-ins under the same names, which is enough for speed and device-agreement checks (not for
fidelity). The choice is recorded in the JSON.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO_ROOT

__all__ = ["environment", "frost_dir_or_synthetic", "git_commit"]


def git_commit() -> str | None:
    """The repository's HEAD commit (plus ``-dirty`` with local changes), or None without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, the accelerator and its settings; runs a small matmul on ``device`` as a sanity check."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "device": str(device),
        "optional_packages": {m: importlib.util.find_spec(m) is not None
                              for m in ("torchvision", "timm", "kornia", "albumentations", "scipy", "triton")},
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except Exception as err:  # pragma: no cover - environment dependent
        env["torchvision"] = f"unavailable: {err}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu_name=props.name,
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    a = torch.randn(256, 256, device=device)
    ref = (a.cpu().double() @ a.cpu().double()).float().to(device)
    env["matmul_check_max_err"] = float((a @ a).sub(ref).abs().max())
    return env


def _write_textures(directory: Path, size: int = 512) -> None:
    from PIL import Image

    from aprkit.corruptions._frost import FROST_FILES

    g = torch.Generator().manual_seed(0)
    for i, name in enumerate(FROST_FILES):
        small = torch.rand(1, 3, size // 16, size // 16, generator=g)
        img = torch.nn.functional.interpolate(small, size=(size, size + 64 * i), mode="bicubic", align_corners=False)
        arr = (img[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(directory / name)


def frost_dir_or_synthetic(scratch: Path) -> tuple[str, str]:
    """``(directory, kind)``: the real frost textures if aprkit finds them, else synthetic ones in ``scratch``."""
    from aprkit.corruptions import find_frost_dir

    try:
        return str(find_frost_dir()), "found"
    except FileNotFoundError:
        scratch.mkdir(parents=True, exist_ok=True)
        _write_textures(scratch)
        find_frost_dir(scratch)  # raises if the stand-ins are incomplete
        return str(scratch), "synthetic stand-ins (imagecorruptions is not installed here)"
