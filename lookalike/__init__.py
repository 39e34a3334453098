"""The lookalike command line and the embedded single-machine stack."""
