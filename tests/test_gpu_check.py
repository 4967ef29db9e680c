"""`python -m experiments.gpu_check`: the device check must not rot between the rare sessions with a GPU.

Its CPU dry run runs every section's real code at toy sizes (~35 s here): every section ends "ok", the float32
and bf16 correctness checks hold, the throughput rows carry rates, ratios, FLOPs and MFU, the studies their
results, and the Markdown holds every part with the command. Mistakes on its command line end in one line;
importing it needs none of the packages the GPU machine lacks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from experiments.gpu_check import report
from experiments.gpu_check.__main__ import MODULE, main
from experiments.gpu_check.plan import SECTIONS
from jaxdl import cli

ROOT = Path(__file__).resolve().parent.parent
LACKING = ("grain", "mlxtend", "tensorboardX", "tensorflow_datasets", "pyhessian")  # on the GPU machine


def test_cpu_dry_run_runs_every_section(tmp_path: Path) -> None:
    out = tmp_path / "check"
    main(["--cpu-dry-run", "--out", str(out)])  # raises RunFailed when a section failed or raised
    data = json.loads((out / report.JSON).read_text())
    sections = data["sections"]
    assert list(sections) == list(SECTIONS)
    hessian_skips = importlib.util.find_spec("pyhessian") is None
    for name, entry in sections.items():
        expected = "skipped" if name == "hessian" and hessian_skips else "ok"
        assert entry["status"] == expected, (name, entry.get("traceback") or entry)
    assert data["dry_run"] and data["command"] == f"python -m {MODULE} --cpu-dry-run --out {out}"

    peak = sections["peak"]["result"]
    assert peak["peak_gflops"] == max(peak["torch_bf16_gflops"], peak["jax_gflops"]) > 0

    correctness = sections["correctness"]["result"]
    assert correctness["ok"] and {r["dtype"] for r in correctness["rows"]} == {"float32", "bfloat16"}
    for row in correctness["rows"]:
        assert row["ok"] and set(row["err"]) >= {"logits", "loss", "update", "update_total", "logits_after_step"}
        assert all(row["err"][m] <= limit for m, limit in row["limit"].items())
    float32 = next(r for r in correctness["rows"] if r["dtype"] == "float32")
    assert float32["err"]["logits"] <= 1e-4 and float32["err"]["loss"] <= 1e-4  # the stated float32 limits

    speed = sections["speed"]["result"]
    assert {r["dtype"] for r in speed["rows"]} == {"float32", "bfloat16"}
    for row in speed["rows"]:
        assert min(row["img_s"].values()) > 0 and min(row["eval_img_s"].values()) > 0
        assert row["jax_over_eager"] == pytest.approx(row["img_s"]["jax"] / row["img_s"]["torch"])
        assert row["train_flops"] > row["eval_flops"] > 0 and row["xla_train_flops"] > 0 and 0 < row["mfu"]["jax"]
        assert row["max_abs_logit_diff"] <= 1e-3 * row["logit_scale"]
    float32_losses = next(r for r in speed["rows"] if r["dtype"] == "float32")["loss"]
    assert float32_losses["jax"] == pytest.approx(float32_losses["torch"], rel=1e-4)  # the same steps were taken

    (svhn,) = sections["svhn"]["result"]["results"].values()
    assert 0 <= svhn["accuracy"] <= 1 and svhn["epochs"] == 1 and (out / "svhn" / "metrics.json").is_file()
    if not hessian_skips:
        hessian = sections["hessian"]["result"]
        assert hessian["ok"] and hessian["probes_vmapped"] == hessian["probes"]
    search = sections["search"]["result"]
    assert search["ok"] and set(search["runs"]) == {"vmapped", "sequential"}

    markdown = (out / report.MARKDOWN).read_text()
    assert f"Command: `python -m {MODULE} --cpu-dry-run" in markdown and "jax " in markdown
    for title in report.TITLES.values():
        assert f"### {title}" in markdown
    assert "**error**" not in markdown and "did not finish" not in markdown


@pytest.mark.parametrize("argv, expected", [
    (["--sections", "speed,gpu"], "unknown section(s) gpu: choose from peak, correctness"),
    (["--cases", "resnet19:32:8"], "unknown architecture 'resnet19'"),
    (["--cases", "resnet18:32"], "write ARCH:SIZE:BATCH"),
    (["--budget-s", "0"], "argument --budget-s: 0 is not a positive number"),
])
def test_mistakes_are_one_line(argv: list[str], expected: str, tmp_path: Path, capsys) -> None:
    assert cli.run(main, f"python -m {MODULE}", ["--cpu-dry-run", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"python -m {MODULE}: error: ") and expected in err, err


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="here the GPU check would run")
def test_without_a_gpu_it_says_so_and_points_to_the_dry_run(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # what the GPU run sets: undone after the test
    assert cli.run(main, f"python -m {MODULE}", ["--out", str(tmp_path)]) == 2
    assert "--cpu-dry-run" in capsys.readouterr().err


def test_import_needs_none_of_the_packages_the_gpu_machine_lacks() -> None:
    code = f"""
import importlib.abc, sys
class Lacking(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {LACKING!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: the GPU machine lacks it)")
sys.meta_path.insert(0, Lacking())
import experiments.gpu_check.__main__
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
