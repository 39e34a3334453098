"""`python -m lookalike`: the same command line as the `lookalike` script."""

from lookalike.cli import main

if __name__ == "__main__":
    main()
