"""``python -m app.cli``: see :mod:`app.cli.main`."""

from app.cli.main import main

raise SystemExit(main())
