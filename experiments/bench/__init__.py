"""Benchmarks, each a command whose output BENCHMARKS.md quotes with it:

    python -m experiments.bench            # training and eval throughput, jaxdl vs PyTorch (`make bench`)
    python -m experiments.bench.sizes      # the same over a grid of models x input sizes, one table
    python -m experiments.bench.profile    # where a step's time goes, per operation, in both frameworks
    python -m experiments.bench.host       # the training loop's host overhead (steps/s of a tiny model)
    python -m experiments.bench.conv       # the CPU convolution forms of jaxdl.models.ConvPolicy, per layer
    python -m experiments.bench.convert    # torchvision <-> jaxdl conversion time
    python -m experiments.bench.hessian    # jaxdl.hessian vs PyHessian
    python -m experiments.bench.search     # vmapped vs sequential grid search vs scikit-learn
    python -m experiments.bench.train      # end-to-end training epochs, jaxdl vs PyTorch

`harness` is what they share (clock, machine description, GEMM peak, output); `twins` the models they compare.
"""
