"""`python -m netspectre` entry point."""

from netspectre.cli import main

raise SystemExit(main())
