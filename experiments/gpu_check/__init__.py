"""`python -m experiments.gpu_check --out DIR`: the one-shot device check for a GPU machine.

Correctness against torchvision on the device (`correctness`), training throughput against PyTorch eager and
`torch.compile` with MFU over the bf16 matmul peak (`speed`, `device`), and the SVHN, Hessian and grid-search
studies (`studies`), each section recorded in DIR/gpu-check.json and DIR/gpu-check.md as soon as it ends
(`report`); `plan` sizes them, `pairs` builds the model pairs. `--cpu-dry-run` runs the same code at toy sizes
on a CPU (tests/test_gpu_check.py), so the check cannot rot between the rare sessions that have a GPU.

Nothing is imported here: `python -m` then loads the CLI once, and importing the package needs none of the
packages the GPU machine lacks (grain, mlxtend, tensorboardX, tensorflow_datasets, pyhessian).
"""
