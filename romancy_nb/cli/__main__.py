"""``python -m romancy_nb.cli``: the ``romancy-nb`` command without its script."""

from romancy_nb.cli import main

main()
