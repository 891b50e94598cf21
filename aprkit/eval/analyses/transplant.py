"""The internal Oppenheim-Lim transplant test: which code does a trained network read at a layer?

For pairs of images (A, B) whose clean predictions differ, B's activation at a layer is replaced by
A's *carrier* with B's *magnitude* and the rest of the network runs on it:

- ``code="phase"``: A's Fourier phase with B's amplitude (per-channel 2-D FFT over the spatial /
  token grid, ``dims="hw"``);
- ``code="sign"``: ``sign(A) * |B|`` elementwise (``sign(0) = +1``).

Complex activations (the block outputs of the phase-collapse network) are handled natively: there the
elementwise carrier is the complex phase, ``sign(z) = z / |z|`` (phase 0 where ``z == 0``), so the
``"sign"`` transplant is ``|B| * A / |A|``; ``"phase"`` uses the full complex FFT. The controls are the
same with ``|z|`` as the magnitude (see :mod:`aprkit.hidden.codes`); rows carry ``complex: True`` and no
``negative_fraction``.

Token outputs ``(B, N, D)`` (timm ViTs): the patch tokens form the grid; the prefix tokens (class / register
tokens, outside the grid) are B's by default (``prefix_tokens="receiver"``), so a ViT that reads its class token
follows B trivially at its last block. ``prefix_tokens="sign"`` gives them A's sign on B's absolute values in the
main transplant (the elementwise code of a real vector without a grid, for both codes), and in the magnitude-deletion
control their own sign on the dataset-mean absolute values; the identity and DC-only controls keep each image's own
prefix tokens.

The prediction then follows A (the carrier donor), B (the magnitude donor) or neither. Controls come
with every row: magnitude deletion (each image's magnitude replaced by the dataset mean at that
layer), DC-only (only each channel's spatial mean kept), the A == B identity swap (must reproduce the
clean predictions), the whole swap (A's entire activation in B's forward: how often the prediction can follow A
at all from this site, below 1 where a skip path or another branch carries B past it) and flags for trivial
results (a magnitude that barely varies between images, or a transplant that does not change the activation, e.g.
the sign of a post-ReLU map), for a phase transplant that cannot move a readout of the channel means (a non-negative
map whose DC-only control keeps every prediction, e.g. a ResNet's last block before global average pooling: the
transplant keeps B's means) and for partial sites (a whole swap followed below 90 %).

Activations are captured once per layer (the forward stops at the layer); pairs run in batches.
Run it as the ``transplant`` suite: ``aprkit eval --suite transplant --data folder:DIR`` (options ``transplant_*``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..._checks import check_positive_int
from ..._hash import derive_seed
from ..._tensors import generator_device
from ...distributed import is_main_process
from ...hidden import codes as C
from ...hidden.attach import PatchGrid, compiled_modules, token_layout
from ...hidden.capture import predict_intervened
from ...hidden.sites import Site, in_call_order, last_activation_site, list_blocks, resolve_module
from ...models.base import eval_mode
from .transplant_data import Data, load_data, read_folder
from .transplant_site import (
    check_n_control,
    check_prefix_tokens,
    functional_site,
    rate,
    site_problem,
    site_rows,
)
from .transplant_tables import plot_sweep, sweep_markdown

__all__ = ["transplant_test", "layer_sweep", "sample_disagreeing_pairs", "load_data", "read_folder"]

class NoDisagreeingPairs(ValueError):
    """Every image has the same clean prediction: the transplant test has no pair (A, B) to run on."""


#: candidate pairs drawn per rejection round (fixed: see sample_disagreeing_pairs)
_PAIR_ROUND = 4096


def sample_disagreeing_pairs(
    preds: torch.Tensor, n_pairs: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_pairs`` index pairs ``(a, b)`` with ``preds[a] != preds[b]``, uniform over all such ordered pairs.

    Drawn with replacement by rejection, in rounds of a fixed size, so that a larger ``n_pairs`` extends the pairs of a
    smaller one (same generator state). Unlike :func:`aprkit.eval.analyses.phase_bias.sample_pairs` (``i``
    uniform over the images), an image of a rare prediction class is picked as ``a`` more often: every
    disagreeing pair weighs the same, the estimand of the transplant test.
    """
    classes = torch.unique(preds)
    if classes.numel() < 2:
        raise NoDisagreeingPairs(
            f"all {preds.numel()} images have the same clean prediction (class {int(classes[0])}): no valid pair "
            "(A, B) with different predictions exists; give images the model assigns to at least two classes"
        )
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    n, got_a, got_b, have = preds.numel(), [], [], 0
    while have < n_pairs:  # rounds of a fixed size: the first k pairs are the same for every n_pairs >= k
        a = torch.randint(n, (_PAIR_ROUND,), generator=generator)
        b = torch.randint(n, (_PAIR_ROUND,), generator=generator)
        keep = preds.cpu()[a] != preds.cpu()[b]
        got_a.append(a[keep])
        got_b.append(b[keep])
        have += int(keep.sum())
    return torch.cat(got_a)[:n_pairs], torch.cat(got_b)[:n_pairs]


def _as_codes(code: str | Sequence[str]) -> list[str]:
    codes = [code] if isinstance(code, str) else list(code)
    for c in codes:
        C.check_code(c)
    if not codes:
        raise ValueError("code must name at least one of 'phase', 'sign'")
    return codes


def _prepare(model, data, labels, n_pairs, generator, batch_size, max_images, num_prefix_tokens, grid):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batch_size, n_pairs = check_positive_int(batch_size, "batch_size"), check_positive_int(n_pairs, "n_pairs")
    images, labels = load_data(data, labels, max_images)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), images.dtype)
    images = images.to(dtype)  # a half or double model takes its own precision (load_data gives float32)
    with PatchGrid(model) as patches:  # a ViT taking any image size (dynamic_img_size) has its input's grid
        clean, logits = predict_intervened(model, images, batch_size, device)
    if labels is not None and int(labels.max()) >= logits.shape[1]:
        raise ValueError(f"labels go up to {int(labels.max())} but the model has {logits.shape[1]} outputs; "
                         "pass labels=None")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    # one draw (on the generator's device, an accelerator's too): the pairs and the controls' images each get their
    # own stream from it, on the host
    base = int(torch.randint(1 << 62, (1,), generator=gen, device=generator_device(gen)))
    streams = [torch.Generator().manual_seed(derive_seed(base, use)) for use in ("pairs", "controls")]
    pairs = (*sample_disagreeing_pairs(clean, n_pairs, streams[0]), torch.randperm(images.shape[0],
                                                                                    generator=streams[1]))
    k, auto_grid = token_layout(model)
    if patches.grid is not None:  # a square grid stays None: to_grid finds it (and the cache keys stay as they were)
        auto_grid = patches.grid if patches.grid[0] != patches.grid[1] else None
    layout_kw = {"num_prefix_tokens": num_prefix_tokens if num_prefix_tokens is not None else k,
                 "grid": grid if grid is not None else auto_grid, "allow_complex": True,
                 "model_prefix_tokens": k if num_prefix_tokens is None else None}
    info = {"n_images": int(images.shape[0]), "n_pairs": int(n_pairs), "num_outputs": int(logits.shape[1]),
            "clean_accuracy": rate(clean, labels) if labels is not None else None}
    return images, labels, device, clean, pairs, layout_kw, info


def _uncompiled(model: nn.Module, layers: Any) -> tuple[nn.Module, Any]:
    """Hooks do not run inside a ``torch.compile`` graph: the tests run the module a compiled model wraps (the same
    weights), whose layer names lack the ``_orig_mod.`` prefix; a model compiled elsewhere (in place, or inside a
    wrapper) is refused."""
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module):
        model = inner
        layers = (layers if layers == "all" else layers.removeprefix("_orig_mod.")) if isinstance(layers, str) else [
            name.removeprefix("_orig_mod.") for name in layers]
    compiled = compiled_modules(model)
    if compiled:
        raise ValueError(f"model has compiled parts {compiled[:3]} (torch.compile or module.compile()): the hooks of "
                         "the transplant test would not run in their graphs; pass the uncompiled model")
    return model, layers


def transplant_test(
    model: nn.Module,
    data: Data,
    layers: Sequence[str],
    *,
    code: str | Sequence[str] = "phase",
    site: str = "output",
    call_index: int | None = None,
    labels: torch.Tensor | None = None,
    n_pairs: int = 1000,
    generator: torch.Generator | None = None,
    dims: str = "hw",
    batch_size: int = 256,
    n_control: int = 512,
    max_images: int | None = None,
    num_prefix_tokens: int | None = None,
    grid: tuple[int, int] | None = None,
    skip_front: bool = False,
    prefix_tokens: str = "receiver",
    keep_predictions: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the transplant test at each of ``layers`` and return ``{"rows": [...], **info}`` (JSON-ready).

    ``data``: images ``(N, C, H, W)`` (uint8, or float in [0, 1] as the model takes them), an
    ``(images, labels)`` pair or an iterable of ``(image, label)``. Each row has ``follow_donor`` (rate
    of predicting A's clean class), ``follow_magnitude`` (B's), ``neither``, the controls
    (``identity_agreement``, ``deletion_agreement``/``_accuracy``, ``dc_only_agreement``/``_accuracy``,
    computed on ``n_control`` random images; ``whole_swap_follow`` on the first ``n_control`` pairs),
    ``magnitude_variation``, ``activation_change`` and ``flags``. ``code`` may list several codes; they share the
    captured activations. ``skip_front`` skips the blocks before the intervened one (block-sequential nets only;
    see ``front_blocks``).
    ``prefix_tokens``: the prefix tokens of token outputs in the main transplant, B's (``"receiver"``) or A's
    sign on B's absolute values (``"sign"``, which also gives them the dataset-mean absolute values in the
    magnitude-deletion control).
    ``keep_predictions`` adds the pair indices (``pairs_a``, ``pairs_b``), the clean predictions and
    each row's per-pair ``predictions``.
    """
    from tqdm.auto import tqdm

    if isinstance(layers, str):
        layers = [layers]
    if not layers:
        raise ValueError("layers is empty; expected module names such as ['layer2.1'] (or layer_sweep for all blocks)")
    model, layers = _uncompiled(model, layers)
    codes = _as_codes(code)
    check_prefix_tokens(prefix_tokens)
    check_n_control(n_control)
    sites = [Site(name, site, call_index) for name in layers]  # type: ignore[arg-type]
    for s in sites:
        resolve_module(model, s.module_path)
    with eval_mode(model):
        images, labels, device, clean, pairs, layout_kw, info = _prepare(
            model, data, labels, n_pairs, generator, batch_size, max_images, num_prefix_tokens, grid)
        for s in sites:  # every site before the first one's long computation
            problem = site_problem(model, images[:1], s, device, layout_kw, codes)
            if problem is not None:
                raise ValueError(problem)
        rows = []
        for depth, s in enumerate(tqdm(sites, disable=not progress or not is_main_process(), desc="transplant")):
            for row in site_rows(model, images, labels, clean, pairs, s, codes, dims, layout_kw, batch_size, n_control,
                                  device, skip_front, prefix_tokens):
                rows.append({"depth": depth, **row})
    if keep_predictions:
        info.update(pairs_a=pairs[0].tolist(), pairs_b=pairs[1].tolist(), clean_predictions=clean.tolist())
    else:
        for row in rows:
            row.pop("predictions")
    return {**info, "rows": rows}


def layer_sweep(
    model: nn.Module,
    data: Data,
    layers: str | Sequence[str] = "all",
    *,
    codes: Sequence[str] = ("phase", "sign"),
    sites: Sequence[str] = ("output", "input"),
    every: int = 1,
    plot: Any = None,
    cache: Any = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`transplant_test` over the blocks (``layers="all"``, see :func:`aprkit.hidden.list_blocks`).

    ``site="output"`` is each block's output; with ``layers="all"``, ``site="input"`` is the input
    of each block's last nonlinearity (its pre-activation; ``"<block>:relu"`` or ``":gelu"`` for functional ones,
    as in GFNet); blocks without one (the phase-collapse net, whose modulus is no activation) have the output site
    only. That is the block's pre-activation only where the block ends in that nonlinearity (a ResNet block): in
    blocks without a final activation (MobileNetV2's inverted residuals, which end in a linear bottleneck; ViT
    blocks, whose last nonlinearity is the MLP's GELU) it is a site inside the branch, which the rest of the network
    reads only through the branch (the whole-swap control flags it ``partial``), and the block output is already the
    signed stream. Every site is checked on one image before the sweep computes: with ``layers="all"``, sites that
    cannot be transplanted (no pre-activation, a channels-last map) are left out and listed in ``"skipped"`` with
    the reason (an error when no site is left); a map below 2x2 (a 1x1 last stage) has no phase code but keeps its
    other codes' rows (the sign code is elementwise: it also takes vectors ``(B, D)``), its phase listed in
    ``"skipped"`` with ``"codes": ["phase"]``. A site named in ``layers`` that cannot be transplanted with every code
    asked for is an error before anything is computed.
    Returns ``{"rows", "skipped", "table" (Markdown), "figure" (path or None), ...}``; ``plot`` is a PNG path.
    A row's ``depth`` is its block's place in the forward pass (named layers: in the order their outputs are made).
    ``cache`` (``get(key)``/``put(key, value)``) stores each finished site so a rerun resumes.
    Other keyword arguments are those of :func:`transplant_test`.
    """
    from tqdm.auto import tqdm

    model, layers = _uncompiled(model, layers)
    blocks = list_blocks(model) if layers == "all" else ([layers] if isinstance(layers, str) else list(layers))
    if not blocks:
        raise ValueError("layers is empty; expected 'all' or module names (aprkit eval: --set "
                         "'transplant_layers=[layer2.1]')")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    picked = list(range(0, len(blocks), every))  # positions among all the blocks: a row's depth is its block's
    if picked[-1] != len(blocks) - 1:
        picked.append(len(blocks) - 1)
    codes = _as_codes(codes)
    sites = [sites] if isinstance(sites, str) else list(sites)
    if not sites:
        raise ValueError("sites is empty; expected 'output' and/or 'input'")
    call_index = kwargs.pop("call_index", None)
    progress = kwargs.pop("progress", False)
    opts: dict[str, Any] = {"dims": "hw", "batch_size": 256, "n_control": 512, "skip_front": False,
                            "prefix_tokens": "receiver"}
    opts.update({k: kwargs.pop(k) for k in list(kwargs) if k in opts})
    check_prefix_tokens(opts["prefix_tokens"])
    check_n_control(opts["n_control"])
    prep = {k: kwargs.pop(k, None) for k in ("labels", "generator", "max_images", "num_prefix_tokens", "grid")}
    n_pairs = kwargs.pop("n_pairs", 1000)
    if kwargs:
        raise TypeError(f"layer_sweep got unexpected arguments {sorted(kwargs)}")
    def sweep_sites(blocks: list[str]) -> tuple[list[tuple[int, str, Site]], list[dict[str, Any]]]:
        targets: list[tuple[int, str, Site]] = []
        skipped: list[dict[str, Any]] = []  # the default sweep's sites it cannot measure, and why
        for site in sites:
            for depth in picked:
                b = blocks[depth]
                if site == "input" and layers == "all":
                    try:
                        t = last_activation_site(model, b)
                    except ValueError as err:  # a block without a nonlinearity (complex blocks): its output only
                        skipped.append({"depth": depth, "block": b, "layer": Site(b, "input").label(), "site": site,
                                        "reason": str(err)})
                        continue
                else:
                    t = Site(b, site, call_index)  # type: ignore[arg-type]  # a str; Site checks "input"/"output"
                resolve_module(model, t.module_path)
                targets.append((depth, b, t))
        return targets, skipped

    if layers != "all":  # named sites are checked before the images are read
        targets, skipped = sweep_sites(blocks)
    with eval_mode(model):
        images, labels, device, clean, pairs, layout_kw, info = _prepare(
            model, data, prep["labels"], n_pairs, prep["generator"], opts["batch_size"], prep["max_images"],
            prep["num_prefix_tokens"], prep["grid"])
        if layers == "all":  # depth in the order the data passes the blocks (Twins defines them otherwise)
            targets, skipped = sweep_sites(list_blocks(model, images[:1].to(device)))
        elif len(blocks) > 1:  # named layers too (a row's depth was its place in the list, the deepest row the last):
            # in the order their outputs are made (a module nested in another, layer4.0 in layer4, comes first)
            paths = {b: resolve_module(model, Site(b, "output").module_path)[0] for b in blocks}
            order = in_call_order(model, list(dict.fromkeys(paths.values())), images[:1].to(device), returned=True)
            ordered = sorted(blocks, key=lambda b: order.index(paths[b]))  # (stable: one module's ops as named)
            if ordered != blocks:
                targets, skipped = sweep_sites(ordered)
        checked = []  # every site is checked before the first one's long computation
        for depth, block, t in targets:
            problem, site_codes = None, codes
            if t.site == "input" and t.op is not None and layers == "all":  # a block without activation modules:
                try:  # its functional one (a named "blk:relu" is kept as named)
                    t = functional_site(model, block, t, images[:1].to(device))
                except ValueError as err:
                    problem, t = str(err), Site(block, "input")  # (named by its block in "skipped")
            if problem is None:
                problem = site_problem(model, images[:1], t, device, layout_kw, codes)
                other = [c for c in codes if c != "phase"]
                if problem is not None and layers == "all" and other and len(other) < len(codes) and site_problem(
                        model, images[:1], t, device, layout_kw, other) is None:  # a 1x1 map: its sign rows
                    skipped.append({"depth": depth, "block": block, "layer": t.label(), "site": t.site,
                                    "codes": ["phase"], "reason": problem})
                    problem, site_codes = None, other
            if problem is None:
                checked.append((depth, block, t, site_codes))
            elif layers != "all":  # sites the caller named: an error
                raise ValueError(problem)
            else:  # the default sweep: the sites it can measure, the others named
                skipped.append({"depth": depth, "block": block, "layer": t.label(), "site": t.site, "reason": problem})
        if not checked:
            raise ValueError("no block of the sweep can be transplanted: "
                             + "; ".join(f"{k['layer']}: {k['reason']}" for k in skipped[:3]))
        rows: list[dict] = []
        common = _sweep_key(model, images, labels, pairs, layout_kw, codes, opts) if cache is not None else ""
        for depth, block, t, site_codes in tqdm(checked, disable=not progress or not is_main_process(),
                                                desc="layer sweep"):
            key = f"{common}|{t.label()}" + ("" if site_codes == codes else f"|codes={','.join(site_codes)}")
            got = cache.get(key) if cache is not None else None
            if got is None:
                got = {"rows": site_rows(model, images, labels, clean, pairs, t, site_codes, opts["dims"], layout_kw,
                                          opts["batch_size"], opts["n_control"], device, opts["skip_front"],
                                          opts["prefix_tokens"])}
                if cache is not None:
                    cache.put(key, got)
            rows += [{"depth": depth, "block": block, **{k: v for k, v in row.items() if k != "predictions"}}
                     for row in got["rows"]]
    figure = plot_sweep(rows, plot) if plot is not None else None
    return {**info, "rows": rows, "skipped": skipped, "table": sweep_markdown(rows),
            "figure": None if figure is None else str(figure)}


#: the version of a sweep site's cached rows (``layer_sweep(cache=...)``)
#: (3: rows carry whole_swap_follow; 4: 'neither' counted, grey grids' exact channel zeros; 5: a donor bin that is zero
#: to the FFT's rounding takes phase 0, as an exact zero: a constant channel on a 7/14/28 grid had noise phases; 6: a
#: phase transplant does not depend on its batch: a dead channel in one sample switched every sample to another
#: rounding; 7: token rows carry the ``prefix`` flag, CPU forward passes run in blocks of 16 rows)
SWEEP_CACHE_VERSION = 7


def _sweep_key(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, pairs: Any, layout_kw: dict,
               codes: Sequence[str], opts: dict[str, Any]) -> str:
    """What a sweep site's rows depend on besides the site: the weights and module tree, the images and labels, the
    sampled pairs (so the generator), the token layout, the codes and every option but ``batch_size`` (which only
    changes how the rows are computed, unless the model's results depend on its batch: the model's part of the key is
    the one every result key has, :func:`~aprkit.eval.engine.cache.model_part`; ``skip_front`` changes the
    diagnostics' rounding)."""
    import json

    from ..engine.cache import identity, model_part
    from ..engine.fingerprint import model_fingerprint

    model_id = model_part(model, model_fingerprint(model, reuse=False), opts["batch_size"])
    parts = {"v": SWEEP_CACHE_VERSION, "model": model_id, "images": identity(images),
             "labels": identity(labels), "pairs": identity(list(pairs)),
             "layout": identity({k: v for k, v in layout_kw.items() if k != "model_prefix_tokens"}),  # implied
             "codes": list(codes), **{k: identity(v) for k, v in opts.items() if k != "batch_size"}}
    return json.dumps(parts, sort_keys=True)
