"""`python -m dbmigrate` is the `dbmigrate` command."""

from dbmigrate.cli import main

raise SystemExit(main())
