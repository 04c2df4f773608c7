"""PostgreSQL: engine, models, migrations and the embedded server."""
