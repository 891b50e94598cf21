"""Hidden layers: feature-level APR (``FeatureAPR``, ``attach``) and the hook points the transplant test uses."""

from __future__ import annotations

from .attach import AttachHandle, LayerNotCalledWarning, PatchGrid, attach, detach, token_layout
from .codes import dc_only, magnitude, signum, transplant, with_magnitude
from .feature_apr import FeatureAPR, feature_apr
from .layout import GridLayout, from_grid, infer_prefix_tokens, to_grid
from .sites import FUNCTIONAL_OPS, Site, StopForward, last_activation_site, list_blocks, resolve_module, tap

__all__ = [
    "FeatureAPR",
    "feature_apr",
    "attach",
    "AttachHandle",
    "detach",
    "token_layout",
    "PatchGrid",
    "LayerNotCalledWarning",
    "Site",
    "tap",
    "StopForward",
    "resolve_module",
    "list_blocks",
    "last_activation_site",
    "FUNCTIONAL_OPS",
    "to_grid",
    "from_grid",
    "GridLayout",
    "infer_prefix_tokens",
    "transplant",
    "magnitude",
    "with_magnitude",
    "dc_only",
    "signum",
]
