"""One site of the transplant test (:mod:`.transplant`): its activations, the transplant and its controls.

``site_rows`` captures a site's activations once and returns one row per code: the follow rates of the main
transplant and the controls (identity swap, magnitude deletion, DC-only, whole swap), the magnitude statistics and
the flags for trivial, inert, DC-readout and partial sites. ``site_problem`` says why a site cannot be transplanted.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...fourier import Dims
from ...hidden import codes as C
from ...hidden.capture import FrontSkip, capture, count_calls, front_blocks, linear_io, predict_intervened
from ...hidden.layout import (
    batch_shape,
    check_channels_first,
    from_grid,
    layout_module,
    site_prefix_tokens,
    to_grid,
)
from ...hidden.sites import FUNCTIONAL_OPS, Site, resolve_module

__all__ = ["site_rows", "site_problem", "functional_site", "check_prefix_tokens", "check_n_control", "rate",
           "PREFIX_TOKENS"]

TRIVIAL_VARIATION = 0.05  # between-image magnitude variation below this flags a trivial result
INERT_CHANGE = 1e-6  # relative activation change below this flags an inert transplant
PARTIAL_REACH = 0.9  # a whole-activation swap followed less often than this flags a site that does not carry it all


#: images per partial sum of :func:`_stats`: fixed, so that the float64 sums do not follow the evaluation's batch size
_STATS_CHUNK = 64


def _stats(x: torch.Tensor, code: C.Code, dims: Dims, layout_kw: dict) -> dict[str, Any]:
    """Dataset-mean magnitude, between-image magnitude variation and the fraction of negative entries
    (``None`` for complex activations), summed over fixed chunks of images (the same numbers for every batch size)."""
    s1: torch.Tensor | None = None
    s2: torch.Tensor | None = None
    neg: float | None = None if x.is_complex() else 0.0
    counted = 0  # grid entries (prefix tokens, which are not counted as negative either, left out)
    for s in range(0, x.shape[0], _STATS_CHUNK):
        g, _, _ = to_grid(x[s:s + _STATS_CHUNK], **layout_kw)
        counted += g.numel()
        m = C.magnitude(g if g.is_complex() else g.float(), code, dims).double()
        s1 = m.sum(0) if s1 is None else s1 + m.sum(0)
        s2 = (m**2).sum(0) if s2 is None else s2 + (m**2).sum(0)
        if neg is not None:
            neg += float((g < 0).double().sum())
    if s1 is None or s2 is None:
        raise ValueError(f"no activations to summarise (shape {tuple(x.shape)}); expected at least one image")
    n = x.shape[0]
    mean, sq = s1 / n, s2 / n
    var_between = (sq - mean**2).clamp_min(0).mean()
    variation = float(var_between.sqrt() / sq.mean().sqrt().clamp_min(1e-30))
    negative = None if neg is None else neg / max(counted, 1)
    return {"mean": mean.float(), "variation": variation, "negative_fraction": negative}


def rate(a: torch.Tensor, b: torch.Tensor) -> float:
    """The fraction of positions where the predictions ``a`` equal ``b``."""
    return float((a == b).float().mean())


#: where the prefix tokens (class / register) of token outputs come from in the main transplant
PREFIX_TOKENS = ("receiver", "sign")


def check_prefix_tokens(prefix_tokens: str) -> str:
    if prefix_tokens not in PREFIX_TOKENS:
        raise ValueError(f"prefix_tokens must be one of {PREFIX_TOKENS}, got {prefix_tokens!r}")
    return prefix_tokens


def check_n_control(n_control: Any) -> int:
    if isinstance(n_control, bool) or not isinstance(n_control, numbers.Integral) or n_control < 1:
        raise ValueError(f"n_control must be an integer >= 1 (the images and pairs of the controls), got {n_control!r}")
    return int(n_control)


def site_rows(model, images, labels, clean, pairs, site, codes, dims, layout_kw, batch_size, n_control, device,
               skip_front=False, prefix_tokens="receiver") -> list[dict]:
    """All rows (one per code) for one site: main transplant and controls."""
    acts, idx, layout_kw, g0, layout = site_activations(model, images, site, batch_size, device, layout_kw, codes)
    a_idx, b_idx, order = pairs
    ctrl = order[:n_control]

    def grid(rows: torch.Tensor) -> tuple[torch.Tensor, Any]:
        g, prefix, _ = to_grid(acts[rows.to(acts.device)], **layout_kw)
        return g, prefix

    def build(rows_b: torch.Tensor, fn, prefix_fn=None) -> torch.Tensor:
        gb, prefix = grid(rows_b)
        if prefix is not None and prefix_fn is not None:
            prefix = prefix_fn(prefix).to(prefix.dtype)
        return from_grid(fn(gb).to(gb.dtype), prefix, layout)

    signed_prefix = prefix_tokens == "sign" and layout.kind == "tokens" and layout.num_prefix_tokens > 0
    # prefix_tokens="sign": the deletion control also gives the prefix tokens the dataset-mean absolute values
    all_prefix = to_grid(acts, **layout_kw)[1] if signed_prefix else None
    prefix_mean = None if all_prefix is None else all_prefix.abs().float().mean(0).to(acts.dtype)

    front = front_blocks(model, site, images[:1].to(device)) if skip_front else FrontSkip()
    owner_in = capture(model, images, front.owner_input, batch_size, device)[0] if front.owner_input else None
    owner_mod = resolve_module(model, front.owner_input.layer)[1] if front.owner_input else None

    def predict_at(rows_in: torch.Tensor, replace) -> tuple[torch.Tensor, torch.Tensor]:
        feed = None if owner_in is None or owner_mod is None else (
            owner_mod, lambda r: owner_in[rows_in[r].to(owner_in.device)])
        return predict_intervened(model, images[rows_in], batch_size, device, site, idx, replace, front.blocks, feed)

    def run(rows_in: torch.Tensor, replace) -> torch.Tensor:
        return predict_at(rows_in, replace)[0]

    dc_pred = run(ctrl, lambda r: build(ctrl[r], C.dc_only))
    # reach control: A's whole activation in B's forward. Below 1 where the output also reads B past this site (a
    # skip path around a pre-activation block's inner nonlinearity, another branch): no code can score above it
    a_c, b_c = a_idx[:n_control], b_idx[:n_control]
    whole_pred = run(b_c, lambda r: build(a_c[r], lambda g: g))  # A's grid and prefix tokens
    whole_follow = rate(whole_pred, clean[a_c])
    clean_logits = predict_intervened(model, images[ctrl], batch_size, device)[1]
    out = []
    for code in codes:
        st = _stats(acts, code, dims, layout_kw)
        mean_mag = st["mean"].to(acts.device)
        change = []

        def main(r: torch.Tensor) -> torch.Tensor:  # called within this iteration (run below)
            ga, prefix_a = grid(a_idx[r])
            gb, prefix = grid(b_idx[r])
            t = C.transplant(ga, gb, code, dims).to(gb.dtype)  # noqa: B023
            if prefix is not None and signed_prefix:  # elementwise: A's sign on B's absolute values
                prefix = C.transplant(prefix_a, prefix, "sign").to(prefix.dtype)
            change.append((t - gb).flatten(1).norm(dim=1) / gb.flatten(1).norm(dim=1).clamp_min(1e-30))  # noqa: B023
            return from_grid(t, prefix, layout)

        pred = run(b_idx, main)
        # the lambdas below are called within this iteration (B023)
        id_pred, id_logits = predict_at(
            ctrl, lambda r: build(ctrl[r], lambda g: C.transplant(g, g, code, dims)))  # noqa: B023
        del_pred = run(ctrl, lambda r: build(
            ctrl[r], lambda g: C.with_magnitude(g, mean_mag, code, dims),  # noqa: B023
            None if prefix_mean is None else lambda pr: C.signum(pr) * prefix_mean))
        act_change = float(torch.cat(change).mean())
        row: dict[str, Any] = {
            "layer": site.layer, "site": site.site, "call_index": idx, "code": code,
            "dims": dims if code == "phase" else None,
            "shape": list(g0.shape[1:]), "kind": layout.kind, "complex": g0.is_complex(), "n_pairs": int(a_idx.numel()),
            "prefix_tokens": prefix_tokens if layout.kind == "tokens" and layout.num_prefix_tokens else None,
            "follow_donor": rate(pred, clean[a_idx]), "follow_magnitude": rate(pred, clean[b_idx]),
            "identity_agreement": rate(id_pred, clean[ctrl]),
            "identity_max_logit_diff": float((id_logits - clean_logits).abs().max()),
            "deletion_agreement": rate(del_pred, clean[ctrl]), "dc_only_agreement": rate(dc_pred, clean[ctrl]),
            "whole_swap_follow": whole_follow,
            "magnitude_variation": st["variation"], "negative_fraction": st["negative_fraction"],
            "activation_change": act_change,
        }
        # counted, not 1 - donor - magnitude: float32 rates left -3e-8 ("-0.0" in reports)
        row["neither"] = float(((pred != clean[a_idx]) & (pred != clean[b_idx])).float().mean())
        if labels is not None:
            row.update(donor_label_acc=rate(pred, labels[a_idx]), magnitude_label_acc=rate(pred, labels[b_idx]),
                       deletion_accuracy=rate(del_pred, labels[ctrl]), dc_only_accuracy=rate(dc_pred, labels[ctrl]))
        flags = []
        if act_change < INERT_CHANGE:
            constant_sign = code == "sign" and st["negative_fraction"] == 0
            why = " (non-negative activations: the sign code is constant)" if constant_sign else ""
            flags.append(f"inert: the transplant leaves the activation unchanged{why}")
        if code == "phase" and dims == "hw" and st["negative_fraction"] == 0 and row["dc_only_agreement"] >= 1.0:
            flags.append("dc-readout: the output reads only the channel means here (the DC-only control keeps every "
                         "prediction), and a phase transplant keeps B's non-negative means: following B is by "
                         "construction")
        if tuple(layout.grid) == (1, 1):  # a vector or a 1x1 map is its own channel means: the control changes nothing
            flags.append("dc-only trivial: a 1x1 map or a vector is all DC, so the DC-only control keeps it whole "
                         "(its agreement says nothing of a mean readout)")
        if layout.kind == "tokens" and layout.num_prefix_tokens > 0:  # a head reading only the class token sees this
            flags.append("prefix: the DC-only control keeps the class (prefix) tokens whole, and the transplant " + (
                "gives them A's elementwise sign under every code, the phase code too (where the head reads only "
                "them, phase and sign rows agree)" if signed_prefix else "keeps B's (where the head reads only "
                "them, following B is by construction)"))
        if st["variation"] < TRIVIAL_VARIATION:
            flags.append(f"trivial: the magnitude hardly varies between images (variation {st['variation']:.3f})")
        if row["identity_agreement"] < 1.0:
            flags.append("identity swap changed predictions")
        if whole_follow < PARTIAL_REACH:
            flags.append(f"partial: with A's whole activation here only {100 * whole_follow:.1f} % follow A (the "
                         "output also reads B past this site, e.g. a skip path around a pre-activation block's "
                         "inner nonlinearity)")
        row["flags"] = flags
        row["predictions"] = pred.tolist()
        out.append(row)
    return out


def site_activations(model: nn.Module, images: torch.Tensor, site: Site, batch_size: int, device: torch.device,
                      layout_kw: dict, codes: Sequence[str] = ("phase",)
                      ) -> tuple[torch.Tensor, int, dict, torch.Tensor, Any]:
    """``site``'s activations of ``images`` checked for a transplant with ``codes`` (a (B, C, H, W) map, complex
    or real, or a token sequence; the phase code needs a map of at least 2x2, the elementwise sign code alone also
    takes a smaller map, e.g. (B, C, 1, 1), or a vector (B, D)): the activations, their call index, the site's
    layout options, the first image's grid and its layout. Raises ``ValueError`` naming the site otherwise."""
    acts, idx = capture(model, images, site, batch_size, device)
    path = site.module_path  # the module around the activation: the site's own, or its parent for a module's input
    if site.site == "input" and site.op is None:
        path = path.rsplit(".", 1)[0] if "." in path else ""
    full, _ = resolve_module(model, path)
    lin = acts.ndim == 4 and linear_io(model, site, images[:1].to(device), layout_module(model, full))
    check_channels_first(model, full, tuple(acts.shape), f"layer {site.layer!r} {site.site}", linear_io=lin)
    layout_kw = dict(layout_kw)
    model_k = layout_kw.pop("model_prefix_tokens", None)
    if model_k is not None and acts.ndim == 3:  # the model's prefix count, unless this output has none (patch_embed)
        layout_kw["num_prefix_tokens"] = site_prefix_tokens(acts.shape[1], model_k, layout_kw["grid"])
    layout_kw["any_size"] = True  # a map below 2x2 or a vector: refused below where the phase code is asked for
    name = f"layer {site.layer!r} {site.site}"
    g0, _, layout = to_grid(acts[:1], **layout_kw, name=name)
    if "phase" in codes and min(layout.grid) < 2:
        what = ("a vector of shape {}, not a feature map (B, C, H, W) or a token sequence (B, N, D): no spatial grid"
                if layout.kind == "vector" else "a feature map of shape {} with a spatial grid below 2x2")
        raise ValueError(f"{name} is {what.format(batch_shape(acts.shape))}; only the phase code needs H >= 2 and "
                         "W >= 2 (a Fourier transform over the grid): the sign code is elementwise and takes it alone "
                         "(code='sign'; aprkit eval: --set 'transplant_codes=[sign]')")
    return acts, idx, layout_kw, g0, layout


def site_problem(model: nn.Module, example: torch.Tensor, site: Site, device: torch.device,
                  layout_kw: dict, codes: Sequence[str] = ("phase",)) -> str | None:
    """Why ``site`` cannot be transplanted with ``codes`` (checked on one image ``example``), or ``None``: a sweep
    checks every site before the long computation starts."""
    try:
        site_activations(model, example, site, 1, device, layout_kw, codes)
    except ValueError as err:
        return str(err)
    return None


def functional_site(model: nn.Module, block: str, site: Site, example: torch.Tensor) -> Site:
    """The pre-activation site of ``block``'s functional activation (``site`` is ``"<block>:relu"``): the first of
    :data:`~aprkit.hidden.sites.FUNCTIONAL_OPS` that the block calls (GFNet's blocks call ``F.gelu``)."""
    for op in FUNCTIONAL_OPS:
        candidate = Site(f"{site.module_path}:{op}", "input", site.call_index)
        if count_calls(model, candidate, example):
            return candidate
    raise ValueError(f"block {block!r} has no activation module and calls none of the functional activations "
                     f"{', '.join(FUNCTIONAL_OPS)} (e.g. the phase-collapse net's modulus): it has no pre-activation "
                     "site; use sites=('output',) (aprkit eval: --set 'transplant_sites=[output]')")
