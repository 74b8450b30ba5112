"""/metrics parses with prometheus-client's own parser and counts what happened."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_processes import start, wait_idle


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_count_what_happened(make_daemon: Any) -> None:
    client = await make_daemon(max_concurrent=1)
    ok = await start(client, argv=["true"])
    await wait_idle(client, ok["id"])
    long = await start(client, argv=["sleep", "30"])
    queued = await start(client, argv=["true"])
    await client.post(f"/processes/{queued['id']}/signals/kill")
    response = await client.get("/metrics")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    samples = _samples(await response.text())
    assert samples[("stablehand_processes", (("state", "running"),))] == 1
    assert samples[("stablehand_queue_length", ())] == 0
    assert samples[("stablehand_registry_records", ())] == 3
    assert samples[("stablehand_processes_exited_total", (("exit_state", "success"),))] == 1
    assert samples[("stablehand_processes_exited_total", (("exit_state", "canceled"),))] == 1
    assert samples[("stablehand_processes_started_total", ())] >= 2
    assert samples[("stablehand_spawn_to_running_seconds_count", ())] == 1
    key = ("stablehand_http_requests_total", (("method", "POST"), ("route", "/processes"), ("status", "201")))
    assert samples[key] == 3
    await client.post(f"/processes/{long['id']}/signals/kill")
    await wait_idle(client, long["id"])
    samples = _samples(await (await client.get("/metrics")).text())
    assert samples[("stablehand_kill_to_idle_seconds_count", ())] == 1
