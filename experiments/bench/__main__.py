"""`python -m experiments.bench`: the framework comparison (`experiments.bench.frameworks`)."""

from experiments.bench import harness
from experiments.bench.frameworks import MODULE, main

if __name__ == "__main__":
    harness.run(main, MODULE)
