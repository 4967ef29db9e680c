"""The check's output: DIR/gpu-check.json and DIR/gpu-check.md, both rewritten after every section.

A device machine may be taken away mid-run (its time is short), so nothing waits for the end: each section's
result, or its error line, is written as soon as it exists, and the Markdown (ready to paste into
BENCHMARKS.md, with the date, the machine and the command) is rendered from the JSON alone.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

JSON, MARKDOWN = "gpu-check.json", "gpu-check.md"


class Record:
    """The check's JSON document: the header, then one entry per section as it ends."""

    def __init__(self, out: Path, header: dict[str, Any], progress: Callable[[str], None]):
        self.out, self.progress = out, progress
        self.data: dict[str, Any] = header | {"sections": {}}

    def save(self) -> None:
        """Both files, each written whole then renamed over the old one (a kill mid-write leaves the last good
        one); NumPy scalars and arrays become numbers and lists, so no result can make the saving fail."""
        texts = {JSON: json.dumps(self.data, indent=2, default=_plain) + "\n", MARKDOWN: markdown(self.data)}
        for name, text in texts.items():
            part = self.out / f"{name}.part"
            part.write_text(text)
            part.replace(self.out / name)

    def partial(self, name: str, result: dict[str, Any]) -> None:
        """What a running section has so far (the throughput rows measured), saved now."""
        self.data["sections"][name]["result"] = result
        self.save()

    def skip(self, name: str, reason: str) -> None:
        self.data["sections"][name] = {"status": "skipped", "reason": reason}
        self.progress(f"{name}: skipped ({reason})")
        self.save()

    def section(self, name: str, run: Callable[[], dict[str, Any]]) -> None:
        """Run one section and record it: "ok", "failed" (it ran, and a check in it did not hold: its result
        says "ok": false), "skipped" (its result says why) or "error" (it raised: one line, and the traceback)."""
        self.progress(f"{name}: start")
        entry: dict[str, Any] = {"status": "running"}
        self.data["sections"][name] = entry
        self.save()  # a section that never ends is seen as running
        start = time.perf_counter()
        try:
            result = run()
            entry |= {"result": result,
                      "status": "skipped" if "skipped" in result else "ok" if result.get("ok", True) else "failed"}
        except Exception as e:  # noqa: BLE001 -- one section's failure is recorded; the others still run
            entry |= {"status": "error", "error": f"{type(e).__name__}: {e}".splitlines()[0],
                      "traceback": traceback.format_exc()}
        entry["seconds"] = time.perf_counter() - start
        self.progress(f"{name}: {entry['status']} in {entry['seconds']:.0f} s"
                      + (f": {entry['error']}" if "error" in entry else ""))
        self.save()


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


# ------------------------------------------------------------------------------------------------ Markdown


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def _g(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _correctness(r: dict[str, Any]) -> list[str]:
    lines = [f"Device: {r['device']}. Cells: error (limit). float32 (TF32 off) against PyTorch directly; bf16: "
             f"error against PyTorch's float32, limit {r['bf16_ratio']:g}x autocast's error or a floor "
             f"{r['bf16_floors']}. Update: worst single tensor / all tensors (relative L2 of the update).", ""]
    rows = []
    for row in r["rows"]:
        if "error" in row:
            rows.append([row["arch"], row["dtype"], f"error: {row['error']}", "", "", "", "", "no"])
            continue
        err, lim = row["err"], row["limit"]

        def cell(m: str) -> str:
            return "-" if m not in err else f"{err[m]:.2g} ({_g(lim.get(m), '.2g')})"

        rows.append([row["arch"], row["dtype"], cell("logits"), cell("loss"),
                     f"{cell('update')} / {cell('update_total')}", cell("stats"), cell("logits_after_step"),
                     "yes" if row["ok"] else "**no**: " + ", ".join(row["failed"])])
    return lines + _table(["arch", "dtype", "eval logits", "loss", "update", "BN stats", "logits after step", "ok"],
                          rows)


def _compile_note(row: dict[str, Any]) -> str:
    if "torch_compile_error" in row:
        return f"error: `{row['torch_compile_error']}`"
    return f"skipped ({row['torch_compile_skipped']})" if "torch_compile_skipped" in row else "-"


def _speed(r: dict[str, Any]) -> list[str]:
    lines = [f"Training steps (SGD momentum, weight decay, cross-entropy), float32 = {r['arithmetic']['float32']}, "
             f"bf16 = {r['arithmetic']['bfloat16']}. MFU: model FLOPs (PyTorch's count of forward + backward) per "
             f"second over the bf16 matmul peak measured in this run ({r['peak_gflops'] / 1e3:.3g} TFLOP/s). Rounds "
             f"of {r['timing']['steps']} steps, median of at least {r['timing']['rounds']}; first step s: jaxdl's "
             "and eager's first step, torch.compile's compilation of both modes. Eval: forward only.", ""]
    rows = []
    for row in r["rows"]:
        head = [row["case"].replace(":", " / "), row["dtype"]]
        if "img_s" not in row:
            rows.append(head + [row.get("error") or row.get("skipped")] + [""] * 7)
            continue
        rate, mfu, first = row["img_s"], row["mfu"], row["first_step_s"]
        compiled = "torch_compile" in rate
        rows.append(head + [
            f"{rate['jax']:.0f}", f"{rate['torch']:.0f}",
            f"{rate['torch_compile']:.0f}" if compiled else _compile_note(row),
            f"{row['jax_over_eager']:.2f}", _g(row["jax_over_compile"], ".2f"),
            " / ".join(f"{mfu[k]:.0%}" for k in ("jax", "torch", "torch_compile") if k in mfu),
            " / ".join(f"{first[k]:.1f}" for k in ("jax", "torch", "torch_compile_compile") if k in first),
            " / ".join(f"{v:.0f}" for v in row["eval_img_s"].values()) if "eval_img_s" in row else "-"])
    return lines + _table(["model / px / batch", "dtype", "jaxdl img/s", "eager img/s", "compile img/s", "jaxdl/eager",
                           "jaxdl/compile", "MFU jaxdl / eager / compile", "first step s",
                           "eval img/s jaxdl / eager / compile"],
                          rows)


def _svhn(r: dict[str, Any]) -> list[str]:
    rows = [[arch, f"{x['data']}{'' if x['real_svhn'] else ' (not SVHN)'}", x["weights"], x["epochs"],
             f"{x['accuracy']:.2%}", f"{x['train_s']:.0f}", f"{x['train_images_per_s']:.0f}"]
            for arch, x in r["results"].items()]
    return [f"Command: `{r['command']}`; wall {r['wall_s']:.0f} s in this process ({r['run_s']:.0f} s by its own "
            f"clock), devices {', '.join(r['devices'])}.", ""] + _table(
        ["arch", "data", "weights", "epochs", "test accuracy", "train s", "train img/s"], rows)


def _hessian(r: dict[str, Any]) -> list[str]:
    jx, pt = r["jax"], r["pyhessian"]
    row = [r["arch"], f"{jx['num_params']:,}", r["images"],
           f"{jx['top_eigenvalue']:.6g} / {pt['top_eigenvalue']:.6g} ({r['top_eigenvalue_rel_diff']:.1e})",
           f"{jx['trace']:.5g}±{jx['trace_stderr']:.2g} / {pt['trace']:.5g}±{pt['trace_stderr']:.2g} "
           f"({r['trace_diff_in_stderr']:.1f})",
           f"{jx['seconds']:.2f} ({jx['seconds_first']:.2f})", f"{pt['seconds']:.2f} ({pt['seconds_first']:.2f})",
           f"**{r['speedup']:.2f}x** ({r['speedup_incl_compile']:.2f}x)", "yes" if r["ok"] else "**no**"]
    return [f"{r['power_iters']} power-iteration + {r['probes']} Hutchinson HVPs per side (jaxdl's probes vmapped "
            f"{r['probes_vmapped']} at a time), float32, TF32 off; agreement: eigenvalues within {r['eig_rtol']:g} "
            f"relative, traces within {r['trace_tol_stderr']:g} combined standard errors. Max |logit diff| "
            f"{r['max_abs_logit_diff']:.2g}.", ""] + _table(
        ["arch", "params", "images", "top eig jax / PyHessian (rel diff)", "trace jax / PyHessian (stderr units)",
         "jax s (first)", "PyHessian s (first)", "speed-up steady (incl. compile)", "agree"], [row])


def _search(r: dict[str, Any]) -> list[str]:
    rows = [[f"jaxdl {name}", f"{x['wall_s']:.1f}", f"{x['cpu_s']:.1f}", f"{x['best_cv']:.2%}", f"{x['test']:.2%}",
             x["best_params"]] for name, x in r["runs"].items()]
    return [f"Grid {r['grid']} ({r['configs']} configs x {r['folds']} folds + refit), {r['epochs']} epochs, batch "
            f"{r['batch_size']}, Adam lr {r['lr']:g}, digits {r['train_size']} train / {r['test_size']} test; each "
            f"run from cleared JAX caches. Sequential / vmapped wall: **{r['speedup']:.2f}x**; same choice: "
            f"{'yes' if r['ok'] else '**no**'}.", ""] + _table(
        ["method", "wall s", "CPU s", "best CV", "test", "best params"], rows)


def _peak(r: dict[str, Any]) -> list[str]:
    return [f"bf16 matmul peak: PyTorch {r['torch_bf16_gflops'] / 1e3:.1f} TFLOP/s, JAX ({r['jax_dtype']}) "
            f"{r['jax_gflops'] / 1e3:.1f} TFLOP/s; MFU uses {r['peak_gflops'] / 1e3:.1f}."]


RENDER = {"peak": _peak, "correctness": _correctness, "speed": _speed, "svhn": _svhn, "hessian": _hessian,
          "search": _search}
TITLES = {"peak": "Matmul peak", "correctness": "Correctness against torchvision", "speed": "Throughput",
          "svhn": "SVHN study", "hessian": "Hessian: jaxdl.hessian vs PyHessian", "search": "Grid search"}


def markdown(data: dict[str, Any]) -> str:
    """The Markdown of everything recorded so far: a heading, the date, machine and command, one part per section."""
    m = data["machine"]
    dry = " (CPU dry run: toy sizes, not a measurement)" if data["dry_run"] else ""
    lines = [f"## Device check ({data['date'][:10]})", "", f"Command: `{data['command']}`{dry}.",
             f"Machine: {data['gpu'] or m['device']}; {m['cpu']}, {m['cores']} cores; jax {m['jax']}, flax "
             f"{data['flax']}, torch {m['torch']}"
             + (f" (CUDA {data['cuda']}, cuDNN {data['cudnn']})" if data.get("cuda") else "")
             + f"; measured {data['date']}.", ""]
    for name, entry in data["sections"].items():
        lines += [f"### {TITLES.get(name, name)}", ""]
        status = entry["status"]
        if status == "error":
            lines.append(f"**error** after {entry['seconds']:.0f} s: `{entry['error']}`")
        elif status == "running":
            lines += RENDER[name](entry["result"]) + [""] if "result" in entry else []
            lines.append("**did not finish** (the run ended while this section was running)")
        elif status == "skipped":
            lines.append(f"skipped: {entry.get('reason') or entry['result']['skipped']}")
        else:
            lines += RENDER[name](entry["result"])
            if "seconds" in entry:
                failed = "; **a check failed**" if status == "failed" else ""
                lines += ["", f"Section time {entry['seconds']:.0f} s{failed}"]
        lines.append("")
    return "\n".join(lines)
