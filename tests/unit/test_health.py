"""The health server over real HTTP on an ephemeral loopback port, and ServiceHealth."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import pytest
from prometheus_client import CollectorRegistry, Counter

from pipeline.errors import ChainwatchError, PortInUse
from pipeline.health import HealthServer, Reply, ServiceHealth, health_server
from pipeline.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(url: str, accept: str | None = None, method: str = "GET") -> tuple[int, str, str]:
    """(status, content type, body) of one request; error statuses too."""
    request = urllib.request.Request(url, method=method,
                                     headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("chainwatch_test_events", "Events", ["topic"], registry=registry).labels(
        topic="chain.dex").inc(3)
    return registry


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> ServiceHealth:
    return ServiceHealth(stall_after_s=30, clock=clock)


@pytest.fixture
def server(health: ServiceHealth, registry: CollectorRegistry) -> Iterator[HealthServer]:
    with HealthServer(health, host="127.0.0.1", port=0, registry=registry) as server:
        yield server


def test_metrics_are_the_registry_in_the_prometheus_text_format(server: HealthServer) -> None:
    status, content_type, body = get(server.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    assert 'chainwatch_test_events_total{topic="chain.dex"} 3.0' in body


def test_metrics_speak_openmetrics_to_a_scraper_that_asks(server: HealthServer) -> None:
    status, content_type, body = get(server.url + "/metrics",
                                     accept="application/openmetrics-text; version=1.0.0")
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_the_default_registry_has_chainwatch_metrics(health: ServiceHealth) -> None:
    import pipeline.metrics  # noqa: F401  (registers them)

    with HealthServer(health, host="127.0.0.1") as server:
        _, _, body = get(server.url + "/metrics")
    assert "# TYPE chainwatch_records_consumed_total counter" in body
    assert "# TYPE chainwatch_consumer_lag gauge" in body


def test_healthz_is_ok_while_the_loop_beats_and_503_once_it_stalls(
        server: HealthServer, health: ServiceHealth, clock: Clock) -> None:
    assert get(server.url + "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    clock.now += 29
    assert get(server.url + "/healthz")[0] == 200
    clock.now += 2
    status, _, body = get(server.url + "/healthz")
    assert status == 503
    assert body == "stalled: the service loop has not turned for 31 s (limit 30 s)\n"
    health.beat()
    assert get(server.url + "/healthz")[0] == 200


def test_readyz_says_what_the_service_published(
        server: HealthServer, health: ServiceHealth, clock: Clock) -> None:
    assert get(server.url + "/readyz")[::2] == (503, "not ready: starting\n")
    health.set_ready(False, "no partitions assigned yet")
    assert get(server.url + "/readyz")[::2] == (503, "not ready: no partitions assigned yet\n")
    health.set_ready(True, "12 partitions assigned, 0 records behind")
    assert get(server.url + "/readyz")[::2] == (
        200, "ready: 12 partitions assigned, 0 records behind\n")
    clock.now += 60  # a stalled service is not ready, whatever it said last
    status, _, body = get(server.url + "/readyz")
    assert status == 503
    assert body.startswith("not ready: stalled")


def test_a_failing_probe_answers_503_and_the_server_keeps_serving(
        registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def alive(self) -> tuple[bool, str]:
            raise RuntimeError("boom")

        def ready(self) -> tuple[bool, str]:
            return True, "fine"

    with HealthServer(Broken(), host="127.0.0.1", registry=registry) as server:
        assert get(server.url + "/healthz")[::2] == (503, "probe failed: RuntimeError\n")
        assert get(server.url + "/readyz")[0] == 200
    assert "health probe failed" in caplog.text


def test_unknown_paths_are_404_and_head_has_no_body(server: HealthServer) -> None:
    assert get(server.url + "/nope")[0] == 404
    assert get(server.url + "/metrics?x=1")[0] == 200
    assert get(server.url + "/readyz", method="HEAD")[::2] == (503, "")


def test_a_taken_port_is_a_one_line_error(health: ServiceHealth) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        with pytest.raises(PortInUse) as info:
            HealthServer(health, host="127.0.0.1", port=taken).start()
    message = str(info.value)
    assert isinstance(info.value, ChainwatchError)
    assert f"metrics port {taken} on 127.0.0.1 is already in use" in message
    assert "--metrics-port" in message
    assert "\n" not in message


def test_close_releases_the_port_and_stops_the_thread(health: ServiceHealth) -> None:
    server = HealthServer(health, host="127.0.0.1").start()
    port = server.port
    assert get(server.url + "/healthz")[0] == 200
    server.close()
    server.close()  # idempotent
    assert not [t for t in threading.enumerate() if t.name == "chainwatch-health"]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    with HealthServer(health, host="127.0.0.1", port=port) as again:  # a restart gets it back
        assert get(again.url + "/healthz")[0] == 200


def test_health_server_follows_the_settings(health: ServiceHealth) -> None:
    with health_server(Settings(), health) as off:
        assert off is None  # metrics_port 0: no server
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    on = Settings(metrics_port=port, metrics_host="127.0.0.1")
    with health_server(on, health) as server:
        assert server is not None
        assert server.port == port
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200


def test_service_health_reads_are_whole_tuples(clock: Clock) -> None:
    health = ServiceHealth(stall_after_s=5, clock=clock)
    assert health.ready() == (False, "starting")
    assert health.alive() == (True, "ok")
    health.set_ready(True, "connected")
    clock.now += 6
    assert health.alive()[0] is False
    assert health.ready()[0] is False


def test_default_server_listens_on_loopback_only(health: ServiceHealth) -> None:
    """Default settings bind 127.0.0.1: /metrics is not on every interface unless asked."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with health_server(Settings(metrics_port=port), health) as server:
        assert server is not None
        assert server.address == ("127.0.0.1", port)
    with HealthServer(health, port=0) as default:
        assert default.address[0] == "127.0.0.1"


def test_routes_answer_beside_the_built_in_paths(health: ServiceHealth,
                                                 registry: CollectorRegistry) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    def api(path: str, query: Mapping[str, str]) -> Reply:
        seen.append((path, dict(query)))
        if path.endswith("/boom"):
            raise RuntimeError("a bug in a route")
        return Reply.json(200, {"path": path})

    with HealthServer(health, port=0, registry=registry, routes={"/v1/": api}) as server:
        status, kind, body = get(server.url + "/v1/things/a%2Fb?first=3&first=4")
        assert (status, kind, json.loads(body)) == (200, "application/json",
                                                    {"path": "/v1/things/a%2Fb"})
        assert seen[-1] == ("/v1/things/a%2Fb", {"first": "4"})  # the last value of each
        assert get(server.url + "/v1")[0] == 200
        status, kind, body = get(server.url + "/v1/boom")  # the route's bug: a JSON 500
        assert (status, kind) == (500, "application/json")
        assert "RuntimeError" in json.loads(body)["error"] and "Traceback" not in body
        assert get(server.url + "/healthz")[0] == 200  # the server serves on
        assert get(server.url + "/")[2] == "chainwatch: /metrics /healthz /readyz /v1/\n"
        assert "/v1/" in get(server.url + "/v2/x")[2]  # 404 names what there is


@pytest.mark.parametrize("prefix", ["/metrics/", "v1/", "/v1", "//"])
def test_a_route_may_not_shadow_the_built_in_paths(health: ServiceHealth, prefix: str) -> None:
    with pytest.raises(ValueError, match="route prefix"):
        HealthServer(health, routes={prefix: lambda path, query: Reply.json(200, {})})
