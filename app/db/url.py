"""The database URL for the configured server (never logged with its password)."""

from sqlalchemy import URL

from app.config import Settings


def configured_database_url(settings: Settings) -> URL:
    """URL of the external PostgreSQL named by the `MANAGER_DB_POSTGRES_*` settings."""
    password = settings.db_postgres_password
    servers = settings.database_hosts()
    host: str | None = servers[0][0] if servers else None
    port: int | None = servers[0][1] if servers else _first(settings.db_postgres_port)
    query: dict[str, str | tuple[str, ...]] = {}
    if len(servers) > 1:
        # A host list goes in the query, as SQLAlchemy's asyncpg dialect takes it.
        query = {
            "host": tuple(f"{name}:{number}" for name, number in servers),
            # Whichever of them accepts writes (migrations included).
            "target_session_attrs": "read-write",
        }
        host = port = None
    elif host and host.startswith("/"):
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
    hosts = url.query.get("host")
    if isinstance(hosts, tuple):
        # asyncpg reads one `host` query value: the list goes comma-separated.
        url = url.update_query_dict({"host": ",".join(hosts)})
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _first(ports: int | tuple[int, ...]) -> int:
    return ports if isinstance(ports, int) else ports[0]
