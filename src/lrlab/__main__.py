"""`python -m lrlab` runs the Hydra app, like the `lrlab` console script."""

from lrlab.cli import main

main()
