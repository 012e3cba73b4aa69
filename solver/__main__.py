"""``python -m topo_solve`` runs the CLI."""

from .cli import main

main()
