"""The convexity study through its command line: one small run, then its results.json, report.md and PNGs.

The verdicts are asserted from what the study wrote, and its certificates are re-checked here from the JSON
with `jaxdl.hessian.verify` on losses written out in this file, so a study that saved a wrong point, sign or
number fails.  The Hessian machinery itself is tested in tests/test_hessian.py.
"""

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from experiments.convexity.__main__ import main
from jaxdl import hessian as hs


FLAGS = ["--datasets", "1", "--points", "2", "--gd-steps", "40", "--epochs", "1", "--hessian-images", "24",
         "--resnet-images", "0", "--lanczos-iters", "6", "--probes", "4"]


def study(out: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:  # the CLI's opt-in XLA flag would outlive it in this process
        mp.setenv("JAXDL_CPU_FLAGS", "0")
        main(["--out", str(out), *FLAGS])


@pytest.fixture(scope="session")
def run(computed_once):
    out = computed_once("convexity", study)  # one run for the whole session, whichever worker asks first
    return out, json.loads((out / "results.json").read_text()), (out / "report.md").read_text()


def _sigmoid_mse_one(w):  # the certificate's example: x = 1, y = 0
    return jax.nn.sigmoid(w[0]) ** 2


def test_q1_ce_is_convex_and_equals_its_closed_forms(run):
    ce = run[1]["q1"]["ce"]
    assert ce["convex"] is True and ce["certificate"] is None
    assert (ce["datasets"], ce["points_per_dataset"]) == (1, 2)
    assert ce["closed_form_max_abs_error_binary"] < 1e-12 and ce["closed_form_max_abs_error_softmax"] < 1e-12
    assert min(ce["min_eigenvalue_binary"], ce["min_eigenvalue_softmax"]) >= -ce["tolerance"]
    assert ce["softmax_null_direction_max_abs_Hv"] < 1e-12  # singular along every vec(a 1^T) ...
    assert ce["softmax_zero_eigenvalues_beyond_d_min"] >= 0  # ... so at least d zero eigenvalues


def test_q1_mse_certificates_verify_from_the_json(run):
    mse = run[1]["q1"]["mse"]
    assert mse["convex"] is False
    c = mse["certificate"]
    s = 1 / (1 + math.exp(-2.0))
    assert c["point"] == [2.0] and c["verified"] is True
    assert c["curvature"] == pytest.approx(2 * s**2 * (1 - s) * (2 - 3 * s), rel=1e-12)  # 2s^2(1-s)(2-3s)
    assert mse["closed_form_curvature"] == pytest.approx(c["curvature"], rel=1e-12)
    cert = hs.CurvatureCertificate(np.array(c["point"]), np.array(c["direction"]), c["curvature"])
    assert hs.verify(cert, _sigmoid_mse_one)
    m = mse["midpoint_certificate"]
    assert m["gap"] > 0 and m["verified"] is True
    assert hs.verify(hs.MidpointCertificate(np.array(m["a"]), np.array(m["b"]), m["gap"]), _sigmoid_mse_one)
    d = mse["dataset_certificate"]
    assert d["verified"] is True and d["curvature"] < 0 and d["n"] == 200
    assert mse["min_eigenvalue"] <= min(d["curvature"], c["curvature"]) < 0


def test_q1_gradient_descent_from_a_saturated_start(run):
    tr = run[1]["q1"]["training"]
    ce, mse = tr["ce"], tr["mse"]
    assert tr["steps"] == 40 and all(len(v) == 41 for v in (ce["loss"], ce["accuracy"], mse["grad_norm"]))
    assert ce["grad_norm"][0] > 10 * mse["grad_norm"][0]  # the saturated sigmoid's s(1-s) damps MSE's gradient
    assert ce["steps_to_best_acc_minus_1pct"] is not None
    assert mse["steps_to_best_acc_minus_1pct"] is None or mse["steps_to_best_acc_minus_1pct"] > ce["steps_to_best_acc_minus_1pct"]
    assert ce["accuracy"][-1] > mse["accuracy"][-1]
    assert ce["loss"] == pytest.approx(ce["ce_of_iterate"])  # trained on CE: the yardstick is its own loss


def test_q2_answer_is_d_with_verified_certificates(run):
    q2 = run[1]["q2"]
    assert q2["answer"] == "d"
    for depth in (1, 2):
        for name in ("ce", "mse"):
            case = q2[f"hidden_layers_{depth}"][name]
            cc, mm = case["certificate"], case["midpoint_certificate"]
            assert case["convex"] is False and cc["verified"] is True and mm["verified"] is True
            assert cc["curvature"] < 0 and case["min_eigenvalue"] <= cc["curvature"] + 1e-9
            # the midpoint of a fitted net and its sign-flipped twin is the zero classifier
            assert mm["gap"] == pytest.approx(mm["loss_zero_classifier"] - mm["loss_fitted"], abs=1e-5)
        o = q2[f"hidden_layers_{depth}"]["ce"]["origin"]
        if depth == 1:  # strict saddle at the origin: lambda_min = -||grad_beta L(0)||, certified right there
            assert o["min_eigenvalue"] == pytest.approx(-o["norm_grad_product"], rel=1e-6)
            assert not any(q2["hidden_layers_1"]["ce"]["certificate"]["point"])
        else:  # the origin is flat to second order; the certificate comes from elsewhere
            assert o["max_abs_hessian"] == 0.0
            assert any(q2["hidden_layers_2"]["ce"]["certificate"]["point"])
    assert q2["hidden_layers_1"]["ce"]["midpoint_certificate"]["loss_zero_classifier"] == pytest.approx(math.log(2), rel=1e-6)
    assert q2["end_to_end"]["ce"]["convex"] is True and q2["end_to_end"]["mse"]["convex"] is True
    np.testing.assert_allclose(q2["scalar_chain_eigenvalues"], [-0.5, 0.0, 0.5], atol=1e-15)
    assert {k: v["correct"] for k, v in q2["seed_answers"].items()} == {"seeds/000 (G. Birua)": False,
                                                                       "seeds/001 (P. Chachondhia)": True}


def test_spectra_of_the_briefly_trained_models(run):
    sp = run[1]["spectrum"]
    assert set(sp) == {"mlp_8x8", "cnn"}  # --resnet-images 0 skips ResNet-18
    mlp, cnn = sp["mlp_8x8"], sp["cnn"]
    assert (mlp["num_params"], mlp["num_images"], mlp["lanczos_iters"], mlp["hutchinson_probes"]) == (610, 24, 6, 4)
    assert cnn["num_params"] == 315_722 and "exact" not in cnn and "scikit-learn" in cnn["data"]
    for s in (mlp, cnn):  # trained through jaxdl.train: one loss per epoch, and the spectrum is of the trained model
        assert len(s["train_loss_per_epoch"]) == 1 and s["loss"] < s["train_loss_per_epoch"][0] < math.log(10)
        assert np.isfinite(s["trace"]) and s["lanczos_min"] < s["lanczos_max"]
    ex = mlp["exact"]
    assert len(ex["eigenvalues"]) == 610 and ex["trace"] == pytest.approx(sum(ex["eigenvalues"]), rel=1e-9)
    scale = max(abs(ex["min"]), abs(ex["max"]))
    assert ex["min"] - 1e-4 * scale <= mlp["lanczos_min"] and mlp["lanczos_max"] <= ex["max"] + 1e-4 * scale  # interlacing
    assert mlp["lanczos_max"] == pytest.approx(ex["max"], rel=1e-2)
    assert abs(mlp["trace"] - ex["trace"]) < 4 * mlp["trace_stderr"]


def test_report_and_plots(run):
    out, results, report = run
    for line in ("**CE is convex.**", "**MSE on the sigmoid is NOT convex.**", "**Answer: (d) none.**",
                 "seeds/000 (G. Birua) answered (a) -- wrong", "seeds/001 (P. Chachondhia) answered (d) -- right",
                 "| mlp_8x8 | 610 | 24 |", "| cnn | 315,722 | 24 |", "Cross-check on mlp_8x8: 6 Lanczos steps",
                 f"v^T H v = {results['q1']['mse']['certificate']['curvature']:.6f}",
                 "python -m experiments.convexity --out "):
        assert line in report, line
    assert "resnet18" not in report
    sizes = {"q1_curvature.png": (1200, 432), "q1_training.png": (1680, 432), "spectrum_density.png": (1200, 432)}
    assert results["meta"]["plots"] == list(sizes)
    for name, size in sizes.items():
        with Image.open(out / name) as im:
            assert (im.format, im.size) == ("PNG", size)
            assert np.asarray(im.convert("L")).std() > 5  # drawn on, not blank


def test_cli_keeps_its_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--out", "--seed", "--datasets", "--points", "--gd-steps", "--gd-lr", "--no-spectrum", "--epochs",
                 "--resnet-epochs", "--hessian-images", "--resnet-images", "--lanczos-iters", "--probes", "--slq-probes",
                 "--chunk"):
        assert flag in text, flag
