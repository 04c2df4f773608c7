"""The database URL for the configured server (never logged with its password)."""

from sqlalchemy import URL

from app.config import Settings


def configured_database_url(settings: Settings) -> URL:
    """URL of the external PostgreSQL named by the `MANAGER_DB_POSTGRES_*` settings."""
    password = settings.db_postgres_password
    host: str | None = settings.db_postgres_host
    port: int | None = settings.db_postgres_port
    query: dict[str, str] = {}
    if host and host.startswith("/"):
        # A Unix socket directory cannot sit in the URL's host part; asyncpg takes it as a query.
        query = {"host": host, "port": str(port)}
        host = port = None
    return URL.create(
        "postgresql+asyncpg",
        username=settings.db_postgres_user,
        password=password.get_secret_value() if password else None,
        host=host,
        port=port,
        database=settings.db_postgres_name,
        query=query,
    )


def asyncpg_dsn(url: URL) -> str:
    """The same URL without the SQLAlchemy driver suffix, for raw asyncpg connections."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
