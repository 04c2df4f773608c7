"""A real browser's EventSource follows a task to `completed` on the GET stream."""

from __future__ import annotations

import uuid

import pytest

from tests.browser.chromium import chromium_page, requires_chromium
from tests.live import LiveService

pytestmark = [pytest.mark.browser, requires_chromium]

FOLLOW = """
async ([path]) => await new Promise((resolve, reject) => {
  const seen = [];
  const source = new EventSource(path);
  const timer = setTimeout(() => { source.close(); reject(new Error("timeout: " + seen)); }, 20000);
  for (const status of ["created", "started", "preprocessing", "transcribing", "evaluating",
                        "completed", "failed"]) {
    source.addEventListener(status, (event) => {
      const data = JSON.parse(event.data);
      seen.push({status: data.status, id: event.lastEventId, accuracy: data.accuracy ?? null});
      if (status === "completed" || status === "failed") {
        clearTimeout(timer);
        source.close();
        resolve(seen);
      }
    });
  }
})
"""


async def test_a_browser_eventsource_follows_a_task_to_completed(live: LiveService) -> None:
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)

    async with chromium_page() as page:
        await page.goto(f"{live.base_url}/health")  # same origin as the stream
        seen = await page.evaluate(
            FOLLOW, [f"/tasks/{task_id}/events?user_id={user_id}&last_event_id=0"]
        )

    assert [event["status"] for event in seen] == [
        "created", "started", "preprocessing", "transcribing", "evaluating", "completed"
    ]  # fmt: skip
    assert seen[-1]["accuracy"] == 87.5
    assert [int(event["id"]) for event in seen] == sorted(int(event["id"]) for event in seen)
