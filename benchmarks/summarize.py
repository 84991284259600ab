"""The markdown table of issue 9's targets from the JSON files `benchmarks/gpu.sh` wrote.

For each target: the best measured figure among the fast variants, the plain eager float32 baseline
measured in the same run, their ratio, and whether the target is met. A figure whose JSON is missing or
failed is shown as "not measured" (never guessed). Then one table per benchmark with every variant.

    python benchmarks/summarize.py OUT_DIR            # markdown on stdout
    python benchmarks/summarize.py OUT_DIR --device cpu  # the same for a CPU run of gpu.sh (plumbing checks)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

GB = 1e9  # the "6 GB" is decimal gigabytes


def load(out: Path, name: str) -> Any:
    """The JSON document *name*.json in *out*, or None when it is missing or not valid JSON."""
    p = out / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _rows(doc: Any, key: str) -> list[dict]:
    return list(doc.get(key) or []) if isinstance(doc, dict) else []


# --- the tolerance held for fast paths (docs/performance.md) -------------------------------------------------

# StyleGAN images in [-1, 1] against the float32 path for the same z: (max abs, mean abs). float16 is the
# reference's own mixed precision (11-bit mantissa), bfloat16 has 8 bits, hence the wider bound.
IMAGE_TOLERANCE = {"float16": (0.05, 0.002), "bfloat16": (0.2, 0.012)}
# Prior ws (W units) against the eager path for the same noise and embedding.
PRIOR_TOLERANCE = {"graph": 1e-5, "compile+graph": 1e-3}


def image_within_tolerance(row: dict) -> bool | None:
    """Whether a StyleGAN variant's pixels stay within the bound of its dtype (None: nothing to judge)."""
    if "max_abs_diff_vs_fp32" not in row:
        return None
    name = str(row.get("variant") or row.get("precision") or "")
    dtype = "bfloat16" if name.startswith("bfloat16") else "float16"
    max_tol, mean_tol = IMAGE_TOLERANCE[dtype]
    return bool(row["max_abs_diff_vs_fp32"] <= max_tol and row.get("mean_abs_diff_vs_fp32", 0.0) <= mean_tol)


def prior_within_tolerance(row: dict) -> bool | None:
    if "max_abs_diff_vs_eager" not in row or row.get("variant") not in PRIOR_TOLERANCE:
        return None
    return bool(row["max_abs_diff_vs_eager"] <= PRIOR_TOLERANCE[row["variant"]])


# --- per benchmark: (best fast value, label, baseline value) -------------------------------------------------


def stylegan(out: Path, device: str, batch: int = 32) -> tuple[list[dict], dict | None, dict | None]:
    rows = [r for name in ("stylegan", "stylegan_compile") for r in _rows(load(out, name), "results")]
    rows = [r for r in rows if r.get("device") == device and r.get("batch") == batch]
    base = next((r for r in rows if r.get("variant", r.get("precision")) == "float32"), None)
    fast = [r for r in rows if r is not base and r.get("output_finite", True) and image_within_tolerance(r) is not False]
    best = max(fast, key=lambda r: r["images_per_second"], default=None)
    return rows, best, base


def prior(out: Path, device: str, steps: int = 1000, batch: int = 16) -> tuple[list[dict], dict | None, dict | None]:
    rows = []
    for name in ("prior", "prior_compile"):
        doc = load(out, name)
        cases = (((doc or {}).get("devices") or {}).get(device) or {}).get("cases") or []
        rows += [dict(r, source=name) for r in cases if r.get("steps") == steps and r.get("batch") == batch]
    base = next((r for r in rows if r.get("variant") == "eager" and r["source"] == "prior"), None)
    base = base or next((r for r in rows if r.get("variant") == "eager"), None)
    fast = [r for r in rows if r.get("variant") != "eager" and prior_within_tolerance(r) is not False]
    best = min(fast, key=lambda r: r["seconds_best"], default=None)
    return rows, best, base


def train(out: Path, device: str) -> tuple[list[dict], dict | None, dict | None]:
    rows = [r for name in ("train", "train_compile") for r in _rows(load(out, name), "results")]
    rows = [r for r in rows if str(r.get("device", "")).split(":")[0] == device]
    base = next((r for r in rows if r.get("variant") == "fp32"), None)
    fast = [r for r in rows if r.get("variant") != "fp32"]
    best = max(fast, key=lambda r: r["steps_per_s"], default=None)
    return rows, best, base


def gendata(out: Path, device: str) -> tuple[list[dict], dict | None, dict | None]:
    rows = [r for run in _rows(load(out, "gendata"), "runs") if str(run.get("device", "")).split(":")[0] == device
            for r in run.get("results") or []]
    base = next((r for r in rows if r.get("stylegan_dtype") == "float32" and r.get("clip_dtype") == "float32"), None)
    fast = [r for r in rows if r is not base]
    best = max(fast, key=lambda r: r["samples_per_s"], default=None)
    return rows, best, base


def sample(out: Path, device: str) -> tuple[list[dict], dict | None, dict | None]:
    rows = []
    for name in ("sample", "sample_fp32"):
        rows += [dict(r, source=name) for r in _rows(load(out, name), "results") if str(r.get("device", "")).split(":")[0] == device]
    base = next((r for r in rows if r["source"] == "sample_fp32"), None)
    best = next((r for r in rows if r["source"] == "sample"), None)
    return rows, best, base


# --- formatting ---------------------------------------------------------------------------------------------

NOT_MEASURED = "not measured"


def _fmt(v: float | None, unit: str, digits: int = 1) -> str:
    return NOT_MEASURED if v is None else f"{v:,.{digits}f} {unit}".strip()


def _target_row(what: str, target: str, value: float | None, base: float | None, unit: str, ok: Callable[[float], bool],
                higher_is_better: bool, how: str, digits: int = 1, differs: str = "") -> str:
    if differs:  # measured with other settings (e.g. BENCH_QUICK): shown, but never judged against the target
        value_s = f"{_fmt(value, unit, digits)} ({differs})" if value is not None else NOT_MEASURED
        return f"| {what} | {target} | {value_s} | {how or '–'} | {_fmt(base, unit, digits)} | – | n/a: other settings |"
    if value is None:
        ratio, met = "–", NOT_MEASURED
    else:
        if base:
            r = value / base if higher_is_better else base / value
            ratio = f"×{r:,.2f}"
        else:
            ratio = "–"
        met = "**met**" if ok(value) else "not met"
    return f"| {what} | {target} | {_fmt(value, unit, digits)} | {how or '–'} | {_fmt(base, unit, digits)} | {ratio} | {met} |"


def targets_table(out: Path, device: str) -> list[str]:
    lines = [
        "| what | target | measured (best fast path) | fast path | eager fp32 baseline (same run) | ratio to baseline | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    doc = load(out, "sample") or {}
    _r, best, base = sample(out, device)
    sdiff = ""
    if best and (doc.get("candidates") != 16 or doc.get("steps") != 4 or best.get("image_size") != [1024, 1024]):
        sdiff = f"{doc.get('candidates')} candidates, {doc.get('steps')} steps, {best.get('image_size')}"
    v = best["end_to_end_s"]["median"] * 1000 if best else None
    b = base["end_to_end_s"]["median"] * 1000 if base else None
    lines.append(_target_row("`sample` latency, 1 prompt, 16 candidates, 4 steps, re-rank, 1024²", "≤ 25 ms", v, b, "ms",
                             lambda x: x <= 25, False, f"{best['dtype']}, median of {best['runs']}" if best else "",
                             differs=sdiff))
    _r, best, base = prior(out, device)
    v = best["seconds_best"] * 1000 if best else None
    b = base["seconds_best"] * 1000 if base else None
    lines.append(_target_row("prior alone, 1000 steps, batch 16, guidance 2", "≤ 150 ms", v, b, "ms", lambda x: x <= 150, False,
                             best["variant"] if best else ""))
    _r, best, base = stylegan(out, device)
    v = best["images_per_second"] if best else None
    b = base["images_per_second"] if base else None
    lines.append(_target_row("StyleGAN2 1024 synthesis throughput, batch 32", "≥ 1000 images/s", v, b, "images/s",
                             lambda x: x >= 1000, True, best.get("variant", best.get("precision")) if best else ""))
    _r, best, base = gendata(out, device)
    v = best["samples_per_s"] if best else None
    b = base["samples_per_s"] if base else None
    lines.append(_target_row("`gen-data` throughput (synthesis + resize + CLIP + write)", "≥ 800 samples/s", v, b, "samples/s",
                             lambda x: x >= 800, True,
                             f"StyleGAN {best['stylegan_dtype']}, CLIP {best['clip_dtype']}" if best else ""))
    tdoc = load(out, "train") or {}
    _r, best, base = train(out, device)
    tdiff = ""
    if tdoc and (tdoc.get("batch_size") != 512 or (tdoc.get("prior") or {}).get("dim") != 512):
        tdiff = f"batch {tdoc.get('batch_size')}, dim {(tdoc.get('prior') or {}).get('dim')}"
    v = best["steps_per_s"] if best else None
    b = base["steps_per_s"] if base else None
    lines.append(_target_row("`train` at batch 512", "≥ 200 steps/s", v, b, "steps/s", lambda x: x >= 200, True,
                             best["variant"] if best else "", differs=tdiff))
    _r, best, base = sample(out, device)
    v = best.get("max_memory_gib") * 2**30 / GB if best and best.get("max_memory_gib") is not None else None
    b = base.get("max_memory_gib") * 2**30 / GB if base and base.get("max_memory_gib") is not None else None
    lines.append(_target_row("peak GPU memory for `sample` above", "≤ 6 GB", v, b, "GB", lambda x: x <= 6, False,
                             best["dtype"] if best else "", digits=2, differs=sdiff if v is not None else ""))
    return lines


def _table(rows: Iterable[dict], cols: list[tuple[str, str]]) -> list[str]:
    rows = list(rows)
    if not rows:
        return [f"_{NOT_MEASURED}_"]
    out = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for _h, k in cols:
            v = r
            for part in k.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            cells.append("–" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)))
        out.append("| " + " | ".join(cells) + " |")
    return out


def details(out: Path, device: str) -> list[str]:
    lines: list[str] = []
    sg = [dict(r, within=image_within_tolerance(r)) for name in ("stylegan", "stylegan_compile")
          for r in _rows(load(out, name), "results") if r.get("device") == device]
    lines += ["", "### StyleGAN2 config-F 1024 (mapping + synthesis)", "",
              f"Tolerance vs float32 (max, mean abs in [-1, 1]): {IMAGE_TOLERANCE}; a variant outside it is not counted above.", ""]
    lines += _table(sg, [("variant", "precision"), ("batch", "batch"), ("images/s", "images_per_second"), ("ms/image", "ms_per_image"),
                         ("× fp32", "speedup_vs_fp32"), ("max abs Δ vs fp32", "max_abs_diff_vs_fp32"),
                         ("mean abs Δ", "mean_abs_diff_vs_fp32"), ("within tolerance", "within"), ("peak MiB", "peak_memory_mib")])
    pr = []
    for name in ("prior", "prior_compile"):
        doc = load(out, name)
        pr += [dict(r, source=name, within=prior_within_tolerance(r))
               for r in (((doc or {}).get("devices") or {}).get(device) or {}).get("cases") or []]
    lines += ["", "### Prior.sample (reference sampler, guidance 2)", "",
              f"Tolerance vs eager (max abs, W units): {PRIOR_TOLERANCE}; a variant outside it is not counted above.", ""]
    lines += _table(pr, [("variant", "variant"), ("batch", "batch"), ("steps", "steps"), ("s (best)", "seconds_best"),
                         ("ms/step", "ms_per_step"), ("× eager", "speedup_vs_eager"), ("first call s", "first_call_s"),
                         ("max abs Δ vs eager", "max_abs_diff_vs_eager"), ("within tolerance", "within"), ("peak MiB", "peak_memory_mib"),
                         ("file", "source")])
    tr = [r for name in ("train", "train_compile") for r in _rows(load(out, name), "results")
          if str(r.get("device", "")).split(":")[0] == device]
    lines += ["", "### train (batch 512)", ""]
    lines += _table(tr, [("variant", "variant"), ("steps/s", "steps_per_s"), ("ms/step", "ms_per_step"), ("× fp32", "speedup_vs_fp32"),
                         ("final loss", "final_loss"), ("peak GiB", "max_memory_gib")])
    gd, _b, _f = gendata(out, device)
    lines += ["", "### gen-data", ""]
    lines += _table(gd, [("StyleGAN", "stylegan_dtype"), ("CLIP", "clip_dtype"), ("samples", "n_samples"), ("batch", "batch_size"),
                         ("samples/s", "samples_per_s"), ("× fp32", "speedup_vs_fp32"), ("peak MiB", "peak_memory_mib")])
    cl = [dict(r, dtype=run.get("dtype")) for run in _rows(load(out, "clip"), "runs")
          if str(run.get("device", "")).split(":")[0] == device for r in run.get("results") or []]
    lines += ["", "### CLIP image embedding (ViT-B-32)", ""]
    lines += _table(cl, [("dtype", "dtype"), ("batch", "batch"), ("images/s", "images_per_s"), ("ms/batch", "ms_per_batch")])
    sm, _b, _f = sample(out, device)
    lines += ["", "### sample (1 prompt, 16 candidates, 4 steps, re-rank)", ""]
    lines += _table(sm, [("run", "source"), ("dtype", "dtype"), ("median s", "end_to_end_s.median"), ("min s", "end_to_end_s.min"),
                         ("prior s", "stages_s.prior"), ("synthesis s", "stages_s.synthesis"), ("re-rank s", "stages_s.clip_rerank"),
                         ("kept render s", "stages_s.render_kept"), ("peak GiB", "max_memory_gib")])
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the folder gpu.sh wrote")
    ap.add_argument("--device", default="cuda", help="whose figures to tabulate (cuda, or cpu for a plumbing run)")
    args = ap.parse_args(argv)
    if not args.out.is_dir():
        print(f"error: {args.out} is not a folder", file=sys.stderr)
        return 2
    info = (args.out / "device.txt").read_text().strip().splitlines() if (args.out / "device.txt").is_file() else []
    torch_line = next((line for line in info if line.startswith("torch ")), "")
    lines = [f"## Issue 9 targets — {args.device}" + (f" ({torch_line})" if torch_line else ""), ""]
    lines += targets_table(args.out, args.device)
    lines += details(args.out, args.device)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
