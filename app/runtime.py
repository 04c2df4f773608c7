"""The resources of one running process, built by the lifespan and shared by requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.config import Settings
from app.db.engine import Database
from app.events.hub import EventHub
from app.events.listener import TaskEventListener
from app.metrics import Metrics
from app.pipeline.clients import StageClients
from app.pipeline.workers import WorkerPool
from app.upload_memory import UploadMemory
from app.webhooks.policy import CallbackPolicy
from app.webhooks.worker import DeliveryWorker


@dataclass
class Runtime:
    settings: Settings
    database: Database
    clients: StageClients
    listener: TaskEventListener
    workers: WorkerPool
    hub: EventHub
    metrics: Metrics
    upload_memory: UploadMemory
    webhook_policy: CallbackPolicy
    deliveries: DeliveryWorker
    # Set at the stop signal, before the server drains: long-lived responses end on it.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
