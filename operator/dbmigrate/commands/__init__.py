"""One module per `dbmigrate` subcommand; each exposes `register(subparsers)`."""
