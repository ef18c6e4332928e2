"""`python -m brupop` is the same as the `brupop` console script."""

from brupop.cli import main

raise SystemExit(main())
