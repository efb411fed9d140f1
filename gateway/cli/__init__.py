"""The ``tidegate`` command line. Each subcommand lives in its own module with a
``register(subparsers)`` function; :mod:`gateway.cli.main` lists them."""
