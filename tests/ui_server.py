"""``chainwatch ui`` as a subprocess for the tests, and a small HTTP client for its API."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import CHAINWATCH

START_TIMEOUT_S = 30.0


@contextlib.contextmanager
def ui_server(store: Path | str, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``chainwatch ui --store STORE --port 0 ARGS`` running; yields the URL it printed on
    stdout's first line; stopped with SIGTERM (it must exit 0)."""
    with subprocess.Popen([CHAINWATCH, "ui", "--store", str(store), "--port", "0", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env or dict(os.environ)) as proc:
        first: list[str] = []
        out = proc.stdout
        assert out is not None
        reader = threading.Thread(target=lambda: first.append(out.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        try:
            if not first or not first[0].startswith("http://"):
                proc.kill()
                _, err = proc.communicate(timeout=10)
                raise AssertionError(f"chainwatch ui did not print its URL: {first} {err}")
            yield first[0].strip().rstrip("/")
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                _, err = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert proc.returncode == 0, f"chainwatch ui exited {proc.returncode}: {err}"


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
         timeout_s: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; a dict ``body`` is sent as JSON, a str as a
    form."""
    data = None
    sent = dict(headers or {})
    if isinstance(body, dict):
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        data = body.encode()
        sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    status, _, body = call(url, headers=headers)
    assert status == 200, (status, body)
    return json.loads(body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
