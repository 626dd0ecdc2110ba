"""The backup worker (`dbmigrate backup`, run by the backup Job of `spec.backup`): the client
tools (`pgdump`), where a dump is stored (`storage`) and one backup from dump to record
(`worker`). It imports no part of the operator (no pydantic, no Kubernetes client): a Job pod
starts with the driver alone, and the S3 client only when it writes to S3."""
