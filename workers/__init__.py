"""jobferry's worker side: the Celery app, its tasks, the job backends and the CLI."""
