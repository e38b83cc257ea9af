"""`python -m lrlab` runs the Hydra app, like the `lrlab` console script."""

from lrlab.app.cli import main

main()
