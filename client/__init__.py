"""Python client and command-line interface."""
