"""``python -m proxy``: the same as the ``sidecache`` console script."""

from proxy.cli import main

raise SystemExit(main())
