"""Goals and the Markdown summary of a GPU check (``gpu_check.json`` -> ``gpu_check.md``)."""

from __future__ import annotations

from typing import Any

from .context import STRIDED_SCALE

__all__ = ["goals", "markdown"]

TAIL_LINES = 15  # lines of pytest's output shown when it wrote no report


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return None
    return d


def _res(report: dict, name: str) -> dict:
    return _get(report, "sections", name, "results") or {}


def _fmt(v: Any, spec: str = ",.0f") -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return format(v, spec)
    return str(v)


def _goal(name: str, value: Any, target: str, met: bool | None, spec: str = ".2f") -> dict[str, Any]:
    return {"goal": name, "value": value, "shown": _fmt(value, spec), "target": target, "met": met}


def goals(report: dict) -> list[dict[str, Any]]:
    """The issue's GPU goals, each with the measured value and whether it is met (None: not measured). In a quick
    run the timing goals are not judged (``unjudged: "quick"``): one call at tiny sizes, one stall reverses a ratio."""
    out = []
    t = _res(report, "tests")
    ok = None if "total" not in t else (t["failed"] == 0 and t["errors"] == 0 and t["passed"] > 0
                                        and not t.get("incomplete") and t.get("exit_code", 0) == 0)
    device = str(_res(report, "env").get("device", "cuda"))  # (--device cpu: the CUDA tests run on the CPU)
    out.append(_goal("CUDA tests pass" if device.startswith("cuda") else f"CUDA tests pass (run on {device})",
                     None if "total" not in t else f"{t['passed']} passed, {t['failed']} failed, "
                     f"{t['errors']} errors, {t['skipped']} skipped", "all pass", ok))
    out += _apr_p_goals(report)
    h = _get(_res(report, "corruptions"), "imagenet_c_hours", "items_generator", "benchmark_15")
    out.append(_goal("ImageNet-C (15 corruptions x 5 severities, 50,000 images), hours", h, "< 1",
                     None if h is None else h < 1, ".2f"))
    for model, row in _res(report, "eval").get("rows", {}).items():
        out.append(_goal(f"evaluate / robustbench-style loop ({model})", row.get("ratio"), ">= 1.5",
                         None if row.get("ratio") is None else row["ratio"] >= 1.5))
    train = _res(report, "train")
    failed = {label: {} for label in train.get("errors") or {}}  # a row that failed: its goal is not measured
    for b, row in {**train.get("rows", {}), **failed}.items():
        ov = row.get("overhead_vs_2b")
        out.append(_goal(f"APR-SP step overhead beyond a 2B standard step (batch {b})",
                         None if ov is None else 100 * ov, "< 5 %", None if ov is None else ov < 0.05, "+.1f"))
    if _get(report, "meta", "quick"):  # the tests goal stays: the same tests run in a quick run
        for g in out[1:]:
            g.update(met=None, unjudged="quick")
    return out


def _apr_p_goals(report: dict) -> list[dict[str, Any]]:
    """APR-P / FFT-only limit per size (fp32): the best of eager ``apr_pair`` (augment section) and the compiled
    rows (compile section, each against the limit measured in its own run), labelled with what reached it."""
    best: dict[tuple[int, int], tuple[float, str]] = {}

    def offer(b: int, s: int, ratio: Any, label: str) -> None:
        if isinstance(ratio, (int, float)) and ratio > best.get((b, s), (float("-inf"), ""))[0]:
            best[b, s] = (float(ratio), label)

    for row in _res(report, "augment").get("rows", []):
        if row["mode"] == "fp32":
            best.setdefault((row["batch"], row["size"]), (float("-inf"), ""))
            offer(row["batch"], row["size"], _get(row, "candidates", "apr_pair", "vs_fft_limit"), "eager apr_pair")
    backend = _res(report, "compile").get("backend")
    for row in _res(report, "compile").get("rows", []):
        if row["target"].startswith("APRSingleBatch") or row["target"] == STRIDED_SCALE:  # APR-S; the old scaling
            continue
        mode = f"mode {row.get('mode', 'default')}" if backend == "inductor" else f"backend {backend}"
        same = row.get("vs_fft_limit_same_mode")
        if isinstance(same, (int, float)):  # a CUDA-graphed core against a CUDA-graphed limit: launch costs out of both
            offer(row["batch"], row["size"], same, f"compiled {row['target']}, {mode}, against the limit in that mode")
        elif row.get("mode", "default") not in ("reduce-overhead", "max-autotune") or backend != "inductor":
            offer(row["batch"], row["size"], row.get("vs_fft_limit"), f"compiled {row['target']}, {mode}")
        # a graph-replayed core against the eager limit is left out: replay alone can reach 0.8 when launch-bound
    out = []
    for (b, s), (r, label) in best.items():
        value = None if r == float("-inf") else r
        g = _goal(f"APR-P core / FFT-only limit, {b} x 3x{s}x{s} fp32 (best of eager and compiled)", value, ">= 0.8",
                  None if value is None else value >= 0.8)
        out.append(g | ({"shown": f"{g['shown']} ({label})", "label": label} if value is not None else {}))
    return out


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


_AUG_COLS = ("copy", "fft_limit", "fft2_limit", "apr_pair", "APRPair", "APRPair_devgen", "APRSingleBatch",
             "mix_amplitude", "low_frequency_swap")


def _augment(res: dict) -> list[str]:
    rows = []
    for r in res.get("rows", []):
        cells = []
        for c in _AUG_COLS:
            v = _get(r, "candidates", c) or {}
            ratio = f" ({v['vs_fft_limit']:.2f})" if "vs_fft_limit" in v else ""
            cells.append(_fmt(v.get("img_s")) + ratio)
        rows.append([f"{r['batch']}x3x{r['size']}x{r['size']}", r["mode"], _fmt(r.get("output_dtype")),
                     _fmt(r.get("max_diff_vs_fp32"), ".1e"), *cells,
                     _fmt(_get(r, "candidates", "apr_pair", "vs_copy"), ".3f")])
    out = ["img/s, in brackets the ratio to the op's FFT-only limit: rfftn + irfftn of the same batch (fft_limit), for "
           "the two-input ops (APRSingleBatch, mix_amplitude, low_frequency_swap) rfftn of both inputs + irfftn "
           "(fft2_limit); max diff: apr_pair in this mode vs fp32"]
    out += _table(["batch", "mode", "out dtype", "max diff", *_AUG_COLS, "apr_pair / copy"], rows)
    for r in res.get("rows", []):
        probe = {"apr_pair (dtype probe)": r["apr_pair_error"]} if "apr_pair_error" in r else {}
        errors = dict(r.get("errors") or {}, **probe)
        for name, msg in errors.items():
            out.append(f"- error, {r['mode']} {r['batch']}x3x{r['size']}x{r['size']}, {name}: {msg[:200]}")
    for size, probe in (res.get("half_precision_fft") or {}).items():
        out.append(f"- half-precision FFT at {size}: {probe}")
    return out


def _corruptions(res: dict) -> list[str]:
    ips = res.get("img_s", {})
    gens = list(ips)
    names = list(dict.fromkeys(n for g in gens for n in ips[g]))
    out = _table(["corruption", *[f"img/s ({g.replace('_', ' ')})" for g in gens]],
                 [[n, *[_fmt(ips[g].get(n), ",.1f") for g in gens]] for n in names])
    for g, h in (res.get("imagenet_c_hours") or {}).items():
        out.append(f"- ImageNet-C projection ({g.replace('_', ' ')}): {h['benchmark_15']:.2f} h for the 15 benchmark "
                   f"corruptions, {h['all_19']:.2f} h for all 19")
    out.append(f"- batch {res.get('batch')} x 3x{res.get('size')}x{res.get('size')}, preset {res.get('preset')}; "
               f"frost textures: {res.get('frost_textures')}; "
               f"device->host copy {_fmt(res.get('device_to_host_img_s'))} img/s")
    if res.get("note"):
        out.append(f"- projection: {res['note']}")
    out += [f"- error, {name}: {msg[:200]}" for name, msg in (res.get("errors") or {}).items()]
    return out


def _eval(res: dict) -> list[str]:
    rows = [[m, _fmt(_get(r, "baseline", "img_s")), _fmt(_get(r, "aprkit", "img_s")),
             _fmt(_get(r, "forward_only", "img_s")),
             _fmt(r.get("ratio"), ".2f") + "x", _fmt(r.get("aprkit_of_limit"), ".2f"),
             f"{_fmt(_get(r, 'forward_only', 'baseline_img_s'))} ({_fmt(r.get('baseline_of_limit'), '.2f')})",
             f"{_fmt(_get(r, 'baseline', 'forward_share'), '.0%')} / {_fmt(_get(r, 'aprkit', 'forward_share'), '.0%')}",
             _fmt(r.get("max_accuracy_diff"), ".1e"),
             f"{_get(r, 'baseline', 'images')} / {_get(r, 'aprkit', 'images')} "
             f"({r.get('n_per_severity')} x (1 + {r.get('corruptions')} x 5))"]
            for m, r in res.get("rows", {}).items()]
    return _table(["model", "baseline img/s", "aprkit img/s", "forward-only img/s", "ratio", "aprkit / forward-only",
                   "forward-only img/s in the baseline's float32 (baseline / it)", "forward share (base / aprkit)", "max acc diff", "images (base / aprkit)"], rows) + (
        [f"- {res['note']}"] if res.get("note") else []) + [
        f"- error, {name}: {msg[:200]}" for name, msg in (res.get("errors") or {}).items()]


def _train(res: dict) -> list[str]:
    def ms(v: Any) -> str:
        return _fmt(None if v is None else 1e3 * v, ".2f")

    rows = [[b, ms(r.get("standard_step_s")), ms(r.get("standard_2b_step_s")), ms(r.get("apr_sp_step_s")),
             ms(r.get("aug_s")), _fmt(r.get("aug_share"), ".1%"), _fmt(r.get("overhead_vs_2b"), "+.1%")]
            for b, r in res.get("rows", {}).items()]
    head = (f"{res.get('model')} at {res.get('image_size')} px, AMP {res.get('amp')}, "
            f"channels_last {res.get('channels_last')}")
    return [head] + _table(["batch B, AMP dtype", "standard ms", "standard 2B ms", "APR-SP ms", "APR aug ms",
                            "aug share", "APR-SP vs 2B"], rows) + [
        f"- error, {label}: {msg[:200]}" for label, msg in (res.get("errors") or {}).items()]


def _compile(res: dict) -> list[str]:
    rows = []
    for r in res.get("rows", []):
        err = r.get("compile_error") or r.get("explain_error") or ""
        reason = (r.get("break_reasons") or [""])[0]
        skips = f"; {r['cudagraph_skips']} cudagraph skip(s), see the log" if r.get("cudagraph_skips") else ""
        rows.append([r["target"], r.get("mode", "default"), f"{r['batch']}x3x{r['size']}x{r['size']}",
                     _fmt(r.get("graphs")), _fmt(r.get("graph_breaks")), _fmt(r.get("compile_s"), ".1f"),
                     _fmt(r.get("eager_img_s")), _fmt(r.get("compiled_img_s")), _fmt(r.get("speedup"), ".2f"),
                     _fmt(r.get("fft_limit_img_s")), _fmt(r.get("vs_fft_limit"), ".2f"),
                     _fmt(r.get("vs_fft_limit_same_mode"), ".2f"),
                     (err or reason + skips).replace("|", "/").replace("\n", " ")[:160]])
    return [f"backend {res.get('backend')}; APRSingleBatch rows against the two-input limit (fft2_limit: rfftn of both "
            "inputs + irfftn)"] + _table(
        ["target", "mode", "batch", "graphs", "breaks", "compile s", "eager img/s", "compiled img/s", "speed-up",
         "FFT-only limit img/s", "compiled / limit", "compiled / limit in the same mode", "error / first break reason"],
        rows) + ([f"- {res['note']}"] if res.get("note") else [])


def _tests(res: dict) -> list[str]:
    out = [f"`{res.get('command')}`: exit {res.get('exit_code')}; {res.get('passed')} passed, "
           f"{res.get('failed')} failed, {res.get('errors')} errors, {res.get('skipped')} skipped"
           + (" (incomplete: killed at the section's time cap)" if res.get("incomplete") else "")]
    out += [f"- {p['kind']}: {p['test']}: {p['message'][:200]}" for p in res.get("problems", [])]
    out += [f"- skipped x{n}: {m}" for m, n in (res.get("skip_reasons") or {}).items()]
    if res.get("no_report") and res.get("exit_code") != 0:  # why (no module named pytest, ...) is in its output
        last = (res.get("output_tail") or "").rstrip().splitlines()[-TAIL_LINES:]
        out += ["- no test report; the last lines of pytest's output (all of it in gpu_check.log):", "", "```", *last,
                "```"]
    return out


_RENDER = {"tests": _tests, "augment": _augment, "corruptions": _corruptions, "eval": _eval, "train": _train,
           "compile": _compile}


def _cap(sec: dict) -> str:
    """A section's cap; with the time the sections before it left unused, which it may use, in brackets."""
    if (sec.get("borrowed_s") or 0) < 1:
        return _fmt(sec.get("cap_s"), ".0f")
    own, extra = _fmt(sec.get("own_cap_s"), ".0f"), sec["borrowed_s"]
    return f"{_fmt(sec.get('cap_s'), '.0f')} ({own} + {extra:.0f} left unused before)"


def markdown(report: dict, titles: dict[str, str]) -> str:
    """The readable summary: environment, goals, section status and one table per section."""
    env = _res(report, "env")
    meta = report.get("meta", {})
    quick = "QUICK smoke run (tiny sizes: numbers are not meaningful, goals not judged); " if meta.get("quick") else ""
    lines = ["# aprkit GPU check", "",
             f"{env.get('gpu_name', env.get('device', '?'))} ({env.get('gpu_memory_gib', '-')} GiB); "
             f"torch {env.get('torch')}, CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}, "
             f"Python {env.get('python')}, {env.get('cpu_count')} CPUs; commit {env.get('git_commit')}; "
             f"{quick}total {_fmt(meta.get('wall_s'), '.0f')} s", "", "## Goals", ""]
    lines += _table(["goal", "measured", "target", "met"],
                    [[g["goal"], g["shown"], g["target"],
                      f"- ({g['unjudged']})" if g.get("unjudged") else {True: "yes", False: "NO", None: "-"}[g["met"]]]
                     for g in report.get("goals", [])])
    lines += ["", "## Sections", ""]
    lines += _table(["section", "status", "wall s", "cap s", "error"],
                    [[n, s.get("status"), _fmt(s.get("wall_s"), ".1f"), _cap(s),
                      (s.get("error") or "").splitlines()[-1][:200].replace("|", "/") if s.get("error") else ""]
                     for n, s in report.get("sections", {}).items()])
    for name, render in _RENDER.items():
        sec = _get(report, "sections", name)
        if sec is None:
            continue
        lines += ["", f"## {titles.get(name, name)}", ""]
        try:
            lines += render(sec.get("results") or {})
        except Exception as err:  # a malformed partial result must not lose the rest of the summary
            lines.append(f"(could not render: {type(err).__name__}: {err})")
        skipped = _get(sec, "results", "skipped_for_time")
        if skipped:
            lines.append(f"- not measured (time cap): {', '.join(skipped)}")
    return "\n".join(lines) + "\n"
