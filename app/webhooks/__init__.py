"""Completion webhooks: signed Standard Webhooks deliveries from an outbox (docs/webhooks.md).

`policy` (which callback URLs are allowed, checked at creation and again at send time),
`transport` (an httpx client that connects only to checked addresses), `signing`,
`payload`, `outbox` (the delivery worker's statements), `reports` (what the API and the
console read about deliveries), `redeliver` and `worker` (the delivery loop). Their SQL is
in app/db/sql/webhooks.sql.
"""
