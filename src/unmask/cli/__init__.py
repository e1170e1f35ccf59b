"""The ``unmask`` command line (:mod:`unmask.cli.main`)."""
