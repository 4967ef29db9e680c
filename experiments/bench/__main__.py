"""`python -m experiments.bench`: the framework comparison (`experiments.bench.frameworks`)."""

from experiments.bench.frameworks import main

if __name__ == "__main__":
    main()
