// Live overview: replaces the figures and the chart with each frame of /console/events.
(function () {
  "use strict";
  if (!document.getElementById("unfinished")) return;
  const seconds = (value) => value.toFixed(1) + " s";
  const source = new EventSource("/console/events");
  source.addEventListener("overview", (message) => {
    const data = JSON.parse(message.data);
    const unfinished = Object.values(data.unfinished).reduce((a, b) => a + b, 0);
    document.getElementById("unfinished").textContent = String(unfinished);
    document.getElementById("waiting").textContent = String(data.waiting);
    document.getElementById("oldest").textContent = seconds(data.oldest_waiting_seconds);
    document.getElementById("failed-hour").textContent =
      String(data.failed_per_minute.reduce((a, b) => a + b, 0));
    document.getElementById("webhooks").textContent = String(data.webhook_backlog);
    document.getElementById("chart").innerHTML = data.chart;  // rendered and escaped by the server
    const table = document.getElementById("unfinished-table");
    while (table.rows.length > 1) table.deleteRow(1);
    for (const [status, count] of Object.entries(data.unfinished)) {
      const row = table.insertRow();
      row.insertCell().textContent = status;
      row.insertCell().textContent = data.stages[status] || "—";
      row.insertCell().textContent = String(count);
    }
  });
})();
