"""The pipeline: workers that claim tasks from PostgreSQL and call the three audio services."""
