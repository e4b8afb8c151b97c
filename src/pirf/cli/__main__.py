"""``python -m pirf.cli`` (and ``accelerate launch -m pirf.cli``): the `pirf` command."""

from pirf.cli import main

main()
