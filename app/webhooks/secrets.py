"""A signing secret per receiver, derived from the service's master secret.

Each receiver verifies with a secret of its own, so none can sign a delivery another
would accept. A receiver is an origin (`scheme://host:port`): the secret of
`https://lms.example.org/hooks/a` and `https://lms.example.org:443/b` is the same, that of
`https://dash.example.org` is not. Deriving (instead of storing one per receiver) keeps
the service stateless and rotation unchanged: each master secret gives each receiver one
derived secret, and while two master secrets are configured both derived secrets sign.

The operator hands a receiver its secret with this module's command line:

    python -m app.webhooks.secrets https://lms.example.org

prints the `whsec_…` value(s) for the configured MANAGER_WEBHOOK_SECRET.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
from collections.abc import Sequence

import httpx

from app.config import WEBHOOK_SECRET_PREFIX, ConfigurationError, Settings

# Domain separation: a derived key is never a value the master key signs elsewhere.
DERIVATION_LABEL = b"ilps-task-manager/webhook-receiver-secret/v1\x00"
DEFAULT_PORTS = {"http": 80, "https": 443}


def receiver_origin(url: str) -> str:
    """`scheme://host:port` of a URL, in one spelling: lower case, ASCII (IDNA) host
    without a trailing dot, explicit port. `ValueError` for what is not an http(s) URL."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise ValueError(f"not a valid URL: {url!r}") from error
    scheme = parsed.scheme.lower()
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if scheme not in DEFAULT_PORTS or not host:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}:{parsed.port or DEFAULT_PORTS[scheme]}"


def receiver_key(master_key: bytes, url: str) -> bytes:
    """HMAC-SHA256(master key, label + origin): the key of the receiver at `url`."""
    origin = receiver_origin(url).encode("ascii")
    return hmac.new(master_key, DERIVATION_LABEL + origin, hashlib.sha256).digest()


def receiver_keys(master_keys: Sequence[bytes], url: str) -> list[bytes]:
    """The keys that sign a delivery to `url`: one per master key, in the same order."""
    return [receiver_key(master, url) for master in master_keys]


def secret_text(key: bytes) -> str:
    """The Standard Webhooks form a receiver's library takes: `whsec_<base64>`."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() if __doc__ else "", file=sys.stderr)
        return 2
    try:
        master_keys = Settings().webhook_keys
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not master_keys:
        print("error: MANAGER_WEBHOOK_SECRET is not set", file=sys.stderr)
        return 1
    for url in argv:
        try:
            origin = receiver_origin(url)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        # While rotating, the first line is the new secret (the first master secret).
        print(origin, " ".join(secret_text(key) for key in receiver_keys(master_keys, url)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
