"""``python -m gateway`` is the ``tidegate`` command."""

from gateway.cli.main import main

raise SystemExit(main())
