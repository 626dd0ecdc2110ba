"""One reconcile pass of a DatabaseMigration: observe -> decide -> act -> patch status."""
