"""jaxdl.report: the formats and tables studies build reports from, and plots that leave matplotlib alone.

The plots run in a fresh interpreter, so nothing another test imported can hide a `matplotlib.use` (which
would switch an open notebook's backend) or pyplot's global figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jaxdl.report import count, markdown_table, percent

PLOT = """
import sys, matplotlib, numpy as np
matplotlib.use = lambda *args, **kwargs: sys.exit("matplotlib.use called")
from jaxdl import report
history = [{"epoch": e, "train_loss": 2.3 / e, "train_accuracy": 0.3 * e} for e in (1, 2, 3)]
report.plot_curves({"a": history, "b": history[:2]}, sys.argv[1] + "/curves.png", "data", test_accuracy={"a": 0.9})
report.plot_confusion(np.eye(3, dtype=int) * 5 + 1, ["x", "y", "z"], "title", sys.argv[1] + "/confusion.png")
report.plot_matrix(np.array([[0.5, np.nan]]), [["0.50", "nan"]], sys.argv[1] + "/matrix.png", rows=["r"],
                   cols=["c1", "c2"], title="grid")
print("pyplot imported" if "matplotlib.pyplot" in sys.modules else "no pyplot")
"""


def test_formats_and_tables():
    assert (percent(0.8933), count(11_689_512), count(1_320), count(62)) == ("89.33%", "11.69 M", "1.32 k", "62")
    assert markdown_table(["a", "b"], [(1, "x"), (2.5, "y")]) == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | y |"


def test_plots_are_written_without_pyplot_or_a_backend_switch(tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", PLOT, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "no pyplot\n")
    for name in ("curves.png", "confusion.png", "matrix.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / name).stat().st_size > 5_000
