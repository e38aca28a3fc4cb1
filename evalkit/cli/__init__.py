"""The ``evalkit`` command: one module per command, assembled by :mod:`evalkit.cli.main`."""
