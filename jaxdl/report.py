"""The SVHN comparison report: markdown tables, PNG plots, and an analysis generated from the numbers.

Every sentence of the analysis is derived from measured values (accuracy, losses, confusions, cost), so the
report cannot claim what the run did not show; results on generated data or with random weights are
labelled as such wherever a number appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# The course reports' Q4 numbers (SVHN, 25% subset, 5 epochs, torchvision ImageNet weights, PyTorch).
BASELINE = {
    "source": "course reports (seeds): SVHN 25% subset, 5 epochs, PyTorch with torchvision ImageNet weights",
    "rows": [  # model, report A accuracy/precision/recall/F1, report B accuracy
        ("LeNet-5", 0.7389, 0.7044, 0.7044, 0.7081, None),
        ("VGG-16", 0.1959, 0.0196, 0.1000, 0.0328, 0.9095),
        ("ResNet-18", 0.8933, 0.8877, 0.8837, 0.8844, 0.8845),
        ("ResNet-50", 0.8786, 0.8766, 0.8702, 0.8714, 0.7957),
        ("ResNet-101", 0.8398, 0.8353, 0.8254, 0.8282, 0.4108),
    ],
}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def comparison_table(results: list[dict[str, Any]]) -> str:
    """The seeds' layout: Model | Test Accuracy | Precision | Recall | F1."""
    lines = ["| Model | Test Accuracy | Precision | Recall | F1 |", "|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {_pct(r['accuracy'])} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} |"
              for r in results]
    return "\n".join(lines)


def plot_curves(results: list[dict[str, Any]], file: Path) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        epochs = [h["epoch"] for h in r["history"]]
        ax_loss.plot(epochs, [h["train_loss"] for h in r["history"]], marker="o", label=r["arch"])
        ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in r["history"]], marker="o", label=f"{r['arch']} train")
        ax_acc.axhline(100 * r["accuracy"], linestyle="--", linewidth=1, color=ax_acc.lines[-1].get_color(),
                       label=f"{r['arch']} test")
    ax_loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="Training loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Training accuracy (test: dashed)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(results[0]["data"]["name"], fontsize=9)
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


def plot_confusion(result: dict[str, Any], file: Path) -> None:
    cm = np.asarray(result["confusion"])
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xticks=range(len(cm)), yticks=range(len(cm)), xlabel="predicted digit", ylabel="true digit",
           title=f"{result['arch']}: test accuracy {_pct(result['accuracy'])}")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


def _top_confusion(result: dict[str, Any]) -> tuple[int, int, int]:
    cm = np.array(result["confusion"])
    np.fill_diagonal(cm, 0)
    i, j = np.unravel_index(int(cm.argmax()), cm.shape)
    return int(i), int(j), int(cm[i, j])


def analysis(results: list[dict[str, Any]]) -> list[str]:
    """Bullet points derived from the measurements (nothing here is fixed text about the models)."""
    ranked = sorted(results, key=lambda r: r["accuracy"], reverse=True)
    best = ranked[0]
    points = [f"Highest test accuracy: {best['arch']} ({_pct(best['accuracy'])}, macro F1 {best['f1']:.4f})"
              + (f", {100 * (best['accuracy'] - ranked[1]['accuracy']):.2f} points ahead of {ranked[1]['arch']}."
                 if len(ranked) > 1 else ".")]
    if len(results) > 1:
        close = [r for r in results if best["accuracy"] - r["accuracy"] <= 0.01]
        cheapest = min(close, key=lambda r: r["flops_per_image"])
        if cheapest is not best:
            points.append(f"{cheapest['arch']} is within 1 point of the best at {_count(cheapest['flops_per_image'])}FLOP "
                          f"per image vs {_count(best['flops_per_image'])}FLOP, and {_count(cheapest['params'])} vs "
                          f"{_count(best['params'])} parameters: the better accuracy-per-cost choice for this data.")
        else:
            points.append(f"No model within 1 point of {best['arch']} is cheaper, so its extra cost "
                          f"({_count(best['flops_per_image'])}FLOP per image) buys measurable accuracy here.")
    for r in results:
        losses = [h["train_loss"] for h in r["history"]]
        last_drop = (losses[-2] - losses[-1]) / losses[-2] if len(losses) > 1 and losses[-2] > 0 else 0.0
        gap = r["history"][-1]["train_accuracy"] - r["accuracy"]
        true, pred, n = _top_confusion(r)
        worst = min(range(len(r["confusion"])), key=lambda c: r["per_class"][str(c)]["f1-score"])
        notes = [f"training loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} epoch(s)"]
        if last_drop > 0.05:
            notes.append(f"still falling {100 * last_drop:.0f}% in the last epoch, so more epochs would likely help")
        if gap > 0.05:
            notes.append(f"last-epoch training accuracy exceeds test accuracy by {100 * gap:.1f} points (overfitting)")
        elif gap < -0.02:
            notes.append("test accuracy is above the last-epoch training accuracy (augmentation and the averaged "
                         "epoch make training accuracy pessimistic)")
        notes.append(f"weakest digit {worst} (F1 {r['per_class'][str(worst)]['f1-score']:.3f}); most frequent error: "
                     f"{true} read as {pred} ({n} times)")
        if r["weights"]["used"] != "imagenet":
            notes.append("trained from random initialisation" + (" because the ImageNet weights were unavailable"
                                                                 if r["weights"]["requested"] == "imagenet" else ""))
        points.append(f"{r['arch']}: " + "; ".join(notes) + ".")
    if results[0]["data"]["svhn"]:
        for r in results:
            twin = {"lenet5": "LeNet-5", "vgg16": "VGG-16", "resnet18": "ResNet-18", "resnet50": "ResNet-50",
                    "resnet101": "ResNet-101"}.get(r["arch"])
            row = next((b for b in BASELINE["rows"] if b[0] == twin), None)
            if row:
                points.append(f"{r['arch']} vs the course baseline: {_pct(r['accuracy'])} vs {_pct(row[1])} (report A)"
                              + (f" / {_pct(row[5])} (report B)" if row[5] is not None else "") + ".")
    else:
        kind = "real digits of another data set" if results[0]["data"]["real"] else "generated digits"
        points.append(f"These numbers are on {kind}, NOT on SVHN: they show the pipeline works and rank the models "
                      "on this stand-in only; they are not comparable with the course baseline below.")
    return points


def baseline_table() -> str:
    lines = [f"Source: {BASELINE['source']}.", "",
             "| Model | Test Accuracy (A) | Precision (A) | Recall (A) | F1 (A) | Test Accuracy (B) |",
             "|---|---|---|---|---|---|"]
    for name, acc, p, r, f1, acc_b in BASELINE["rows"]:
        lines.append(f"| {name} | {_pct(acc)} | {p:.4f} | {r:.4f} | {f1:.4f} | {_pct(acc_b) if acc_b else '-'} |")
    lines.append("\nReport A's VGG-16 (19.59%, recall 0.1 = one class predicted) is a failed run, not the model's level.")
    return "\n".join(lines)


def write(results: list[dict[str, Any]], out: Path, command: str) -> Path:
    """report.md, curves.png and confusion_<arch>.png in `out`; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(results, out / "curves.png")
    for r in results:
        plot_confusion(r, out / f"confusion_{r['arch']}.png")
    data = results[0]["data"]
    label = "" if data["svhn"] else " — on a stand-in data set, NOT SVHN"
    md = [f"# SVHN model comparison{label}", "",
          f"Command: `{command}`", "",
          f"Data: **{data['name']}** — {data['train_size']} training / {data['test_size']} test images"
          + ("" if data["svhn"] else ". **These are not SVHN results.**"), ""]
    md += [f"- {r['arch']}: weights {r['weights']['used']}" + (f" ({r['weights']['note']})" if r["weights"]["note"] else "")
           + f"; input {r['image_size']}x{r['image_size']}" + (f" ({r['resize_note']})" if r.get("resize_note") else "")
           for r in results]
    md += ["", "## Results", "", comparison_table(results), "",
           "## Cost", "", "| Model | Parameters | Forward FLOPs / image | Train img/s | Eval img/s | Train time |",
           "|---|---|---|---|---|---|"]
    md += [f"| {r['arch']} | {r['params']:,} | {_count(r['flops_per_image'])} | {r['train_images_per_s']:.0f} | "
           f"{r['eval_images_per_s']:.0f} | {sum(h['seconds'] for h in r['history']):.0f} s |" for r in results]
    md += ["", "## Training loss per epoch", "", "| Model | " + " | ".join(
        f"epoch {h['epoch']}" for h in max((r["history"] for r in results), key=len)) + " |",
        "|---|" + "---|" * max(len(r["history"]) for r in results)]
    md += [f"| {r['arch']} | " + " | ".join(f"{h['train_loss']:.4f}" for h in r["history"]) + " |" for r in results]
    md += ["", "![training curves](curves.png)", ""]
    md += [f"![{r['arch']} confusion matrix](confusion_{r['arch']}.png)" for r in results]
    md += ["", "## Analysis (generated from the numbers above)", ""] + [f"- {p}" for p in analysis(results)]
    md += ["", "## Baseline: the course reports", "", baseline_table(), ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
