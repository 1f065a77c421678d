"""Small runnable examples; ``romancy-nb demo`` runs :mod:`romancy_nb.examples.orders`."""
