"""HTTP layer: routers, schemas and request dependencies."""
