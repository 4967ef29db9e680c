"""What the check runs: the GPU plan (sized to finish within 8 minutes on an H200) and the CPU dry run's (toy
sizes, the same code paths, ~30 s on the project's 2-core CPU so the test suite can afford it)."""

from __future__ import annotations

import dataclasses

from experiments.gpu_check.speed import Case, Timing

SECTIONS = ("peak", "correctness", "speed", "svhn", "hessian", "search")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of every section. `reserve_s`: the seconds each section after `speed` is expected to take; the
    speed section stops starting new work when only those are left of the budget, and a section starts only
    while at least half of its reserve is left."""

    correctness_archs: tuple[str, ...]
    correctness_batch: int
    cases: tuple[Case, ...]
    timing: Timing
    svhn_argv: tuple[str, ...]
    hessian: dict
    search: dict
    reserve_s: dict
    budget_s: float
    peak_repeats: int  # bursts of the matmul peak measurement (its best is the peak)
    torch_threads: int | None  # PyTorch's intra-op threads for the run (None: its default)


GPU = Plan(
    correctness_archs=("resnet18", "vgg11_bn", "lenet5"), correctness_batch=32,
    cases=tuple(map(Case.parse, ("resnet18:32:512", "resnet50:32:512", "vgg16:32:512", "resnet50:224:128"))),
    timing=Timing(rounds=3, steps=10, seconds=1.0, compile=True, eval=True),
    svhn_argv=(),  # the default run (what `make svhn` runs)
    hessian={"arch": "resnet18", "images": 128, "epochs": 1, "power_iters": 20, "probes": 20},
    search={"epochs": 30, "units": [32, 64, 128], "activations": ["relu", "tanh", "sigmoid"]},  # the seeds' grid
    # guesses until a GPU run has measured them (each section's seconds are in its JSON)
    reserve_s={"svhn": 90.0, "hessian": 75.0, "search": 45.0},
    budget_s=460.0,  # plus ~15 s of imports and device start: under 8 minutes
    peak_repeats=5,
    torch_threads=None,
)

# LeNet-5 (convolutions, pooling) for the correctness checks; elsewhere the MLP, whose programs XLA compiles
# several times faster on a CPU (the sections' code does not depend on the architecture).
DRY_RUN = Plan(
    correctness_archs=("lenet5",), correctness_batch=8,
    cases=(Case("mlp", 32, 8),),
    # torch.compile is left out on the CPU: Inductor's C++ compilation alone outlasts the dry run's budget
    timing=Timing(rounds=1, steps=1, seconds=0.0, compile=False, eval=True),
    svhn_argv=("--arch", "mlp", "--data", "digits", "--epochs", "1", "--fraction", "0.2", "--batch-size", "32"),
    hessian={"arch": "mlp", "images": 16, "epochs": 1, "power_iters": 20, "probes": 4},  # 20: converged
    search={"epochs": 1, "units": [8], "activations": ["relu"]},
    reserve_s={"svhn": 0.0, "hessian": 0.0, "search": 0.0},
    budget_s=600.0,
    peak_repeats=1,
    # one thread: on a shared 2-core machine OpenMP's second thread waits for a core, up to 0.3 s per LeNet-5 step
    torch_threads=1,
)
