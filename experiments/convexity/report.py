"""report.md, generated from results.json's measurements only: every number and verdict in it is read from
the results, so the prose cannot drift from what was measured."""

from __future__ import annotations

from experiments.convexity.q2 import CHOICES
from jaxdl.report import markdown_table


def render(r: dict) -> str:
    """The whole report: header, Q1, Q2 and (when measured) the spectra."""
    lines = ["# CE vs MSE convexity, settled by second-order analysis", "",
             f"Command: `{r['meta']['command']}` ({r['meta']['seconds']:.0f} s on {r['meta']['machine']}).", ""]
    lines += _q1(r["q1"]) + _q2(r["q2"])
    if r.get("spectrum"):
        lines += _spectra(r["spectrum"])
    return "\n".join(lines)


def _yes(b: bool) -> str:
    return "convex" if b else "NOT convex"


def _after(curve: dict, steps: int) -> str:
    k = curve["steps_to_best_acc_minus_1pct"]
    return f"after {k} steps" if k is not None else f"not within {steps} steps"


def _q1(q1: dict) -> list[str]:
    ce, mse, tr = q1["ce"], q1["mse"], q1["training"]
    lines = ["## Q1 Logistic regression", "",
             f"**CE is {_yes(ce['convex'])}.** Over {ce['datasets']} random data sets x {ce['points_per_dataset']} "
             f"points, jax.hessian (float64) equals the closed forms X^T diag(p(1-p)) X/n (max abs error "
             f"{ce['closed_form_max_abs_error_binary']:.1e}) and mean_i x_i x_i^T (x) (diag p_i - p_i p_i^T) (max abs "
             f"error {ce['closed_form_max_abs_error_softmax']:.1e}); both are sums of PSD terms, and the smallest "
             f"eigenvalue seen is {ce['min_eigenvalue_binary']:.2e} (binary) / {ce['min_eigenvalue_softmax']:.2e} "
             f"(softmax). The softmax Hessian annihilates every vec(a 1^T) (max |Hv| = "
             f"{ce['softmax_null_direction_max_abs_Hv']:.1e}), so softmax CE is convex but not strictly.", ""]
    c, m, dc = mse["certificate"], mse["midpoint_certificate"], mse["dataset_certificate"]
    lines += [f"**MSE on the sigmoid is {_yes(mse['convex'])}.** One example x=1, y=0 at w={c['point'][0]:g}: "
              f"v^T H v = {c['curvature']:.6f} by one float64 HVP (closed form 2s^2(1-s)(2-3s) = "
              f"{mse['closed_form_curvature']:.6f}; verified: {c['verified']}). Without derivatives: "
              f"L(({m['a'][0]:g}+{m['b'][0]:g})/2) exceeds the chord by {m['gap']:.4f} (verified: {m['verified']}). "
              f"On a {dc['n']}-example data set the most negative curvature found is {dc['curvature']:.4g} "
              f"(verified: {dc['verified']}).", ""]
    ce_t, mse_t = tr["ce"], tr["mse"]
    lines += [f"**Training.** Full-batch GD (lr {tr['lr']}, {tr['steps']} steps) from a start with mean |logit| "
              f"{tr['start_mean_abs_logit']:.1f} on the wrong side: the initial gradient norm is "
              f"{ce_t['grad_norm'][0]:.2e} for CE and {mse_t['grad_norm'][0]:.2e} for MSE "
              f"({ce_t['grad_norm'][0] / mse_t['grad_norm'][0]:.0f}x smaller, the saturated sigmoid's s(1-s) factor). "
              f"Within 1% of the best accuracy: CE {_after(ce_t, tr['steps'])}, MSE {_after(mse_t, tr['steps'])}"
              f"; final accuracy CE {ce_t['accuracy'][-1]:.3f}, MSE {mse_t['accuracy'][-1]:.3f}. "
              "See q1_training.png and q1_curvature.png.", ""]
    return lines


def _q2(q2: dict) -> list[str]:
    lines = ["## Q2 Deep linear binary classifier", ""]
    for depth in (1, 2):
        for name in ("ce", "mse"):
            k = q2[f"hidden_layers_{depth}"][name]
            o, cc, mm = k["origin"], k["certificate"], k["midpoint_certificate"]
            at_origin = not any(cc["point"])
            where = ("the origin, a strict saddle: lambda_min = " f"{o['min_eigenvalue']:.6f} vs -||grad_beta L(0)|| = "
                     f"-{o['norm_grad_product']:.6f}") if at_origin else (
                     f"a random point (max |H_ij| at the origin = {o['max_abs_hessian']:g}, "
                     f"lambda_min there {o['min_eigenvalue']:.3g})")
            lines.append(f"- {depth} hidden layer(s), {name.upper()} ({k['num_params']} params): {_yes(k['convex'])}. "
                         f"Curvature certificate {cc['curvature']:.4g} at {where} (verified: {cc['verified']}); most negative "
                         f"eigenvalue seen {k['min_eigenvalue']:.4g}; "
                         f"midpoint of a fitted net (loss {mm['loss_fitted']:.4f}) and its sign-flipped twin is the "
                         f"zero classifier (loss {mm['loss_zero_classifier']:.4f}), gap {mm['gap']:.4f} "
                         f"(verified: {mm['verified']}).")
    e = q2["end_to_end"]
    lines += ["", f"In the end-to-end vector beta both are convex: smallest Hessian eigenvalue over "
              f"{e['ce']['points']} points {e['ce']['min_eigenvalue']:.2e} (CE, {_yes(e['ce']['convex'])}) and "
              f"{e['mse']['min_eigenvalue']:.2e} (MSE, {_yes(e['mse']['convex'])}). The non-convexity comes from the "
              f"factorisation, not the loss. The scalar chain CE(abc; y=1) at (1,0,0) has eigenvalues "
              f"{', '.join(f'{v:g}' for v in q2['scalar_chain_eigenvalues'])}.", "",
              f"**Answer: ({q2['answer']}) {CHOICES[q2['answer']]}.** The two seed reports disagreed: "
              + "; ".join(f"{k} answered ({v['answer']}) -- {'right' if v['correct'] else 'wrong'}"
                          for k, v in q2["seed_answers"].items()) + ".", ""]
    return lines


def _spectra(sp: dict) -> list[str]:
    rows = []
    for name, s in sp.items():
        ex = s.get("exact")
        rows.append([name, f"{s['num_params']:,}", s["num_images"], ", ".join(f"{v:.3f}" for v in s["train_loss_per_epoch"]),
                     f"{s['loss']:.3f}", f"{s['lanczos_min']:.4g}", f"{s['lanczos_max']:.4g}",
                     f"{s['trace']:.4g} +- {s['trace_stderr']:.2g}",
                     f"{ex['min']:.4g} / {ex['max']:.4g} / {ex['trace']:.4g}" if ex else "--"])
    header = ["model", "params", "images", "train loss by epoch", "loss", "Lanczos min", "Lanczos max",
              "Hutchinson trace", "exact min / max / trace"]
    lines = ["## Hessian spectra on the digits (eval mode, mean CE)", "", markdown_table(header, rows)]
    if "mlp_8x8" in sp and "exact" in sp["mlp_8x8"]:
        s = sp["mlp_8x8"]
        ex = s["exact"]
        lines += ["", f"Cross-check on mlp_8x8: {s['lanczos_iters']} Lanczos steps give lambda_max {s['lanczos_max']:.6g} "
                  f"vs exact {ex['max']:.6g} (rel. error {abs(s['lanczos_max'] - ex['max']) / abs(ex['max']):.1e}) and "
                  f"lambda_min {s['lanczos_min']:.6g} vs {ex['min']:.6g}; Hutchinson ({s['hutchinson_probes']} probes) "
                  f"{s['trace']:.5g} +- {s['trace_stderr']:.2g} vs exact trace {ex['trace']:.5g} "
                  f"({abs(s['trace'] - ex['trace']) / s['trace_stderr']:.1f} standard errors)."]
    neg = [n for n, s in sp.items() if s["lanczos_min"] < 0]
    lines += ["", "Negative Hessian eigenvalues (non-convex loss landscape at the trained point): "
              + (", ".join(f"{n} ({sp[n]['lanczos_min']:.3g}, {abs(sp[n]['lanczos_min']) / sp[n]['lanczos_max']:.1e} of lambda_max)" for n in neg)
                 if neg else "none found") + ". See spectrum_density.png.", ""]
    return lines
