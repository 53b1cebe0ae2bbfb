"""The MLflow UI shows a finished sweep as people look at it (issue 12), checked in a real browser.

A real `mlflow ui` on 127.0.0.1 serves the store of a finished two-member
sweep. Headless Chromium (Debian's `chromium`, which .ci/run installs) loads
the experiment's runs page, opens the parent run's row, and must render both
child runs under their short names; then it loads one child's samples
artifact, which must render as a table (cells holding the logged prompt and
response), not as JSON text. Chromium is driven over the DevTools protocol on
a pipe (`--remote-debugging-pipe`), so no Python package beyond the standard
library is needed.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from rlhf_sweeps.tracking import table_rows
from tests.launching import SMALL, mlflow_runs, run_launch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium, one page, driven by DevTools protocol messages on fds 3 (in) and 4 (out)."""

    def __init__(self, profile: Path):
        r_cmd, self._w = os.pipe()
        self._r, w_evt = os.pipe()

        def on_fds_3_and_4():  # where --remote-debugging-pipe reads and writes
            os.dup2(r_cmd, 3)
            os.dup2(w_evt, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1600,1000", "about:blank"],
            pass_fds=(3, 4), preexec_fn=on_fds_3_and_4, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(r_cmd)
        os.close(w_evt)
        self._id, self._buf, self._session = 0, b"", None
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self._session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def call(self, method: str, timeout: float = 60, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self._session and not method.startswith("Target."):
            msg["sessionId"] = self._session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            while b"\0" in self._buf:  # one message per NUL; events are skipped
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.time()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer {method}")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buf += chunk

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def until(self, expression: str, what: str, timeout: float = 90):
        """Poll a JS expression until it is truthy (the UI renders asynchronously)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"{what} never rendered; the page said:\n{self.js('document.body.innerText')[:3000]}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        os.close(self._w)
        os.close(self._r)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_ui(tmp_path):
    """`mlflow ui` over the test's store (started once the sweep has written it)."""
    procs = []

    def start(uri: str) -> str:
        port = _free_port()
        log = open(tmp_path / "ui.log", "w")
        procs.append(subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", uri,
                                       "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                      cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return f"http://127.0.0.1:{port}"
            except requests.RequestException:
                time.sleep(0.5)
        raise AssertionError(f"mlflow ui did not start:\n{(tmp_path / 'ui.log').read_text()[-3000:]}")

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: a process group this fixture started
        proc.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/run installs Debian's package)")
def test_the_ui_shows_the_sweeps_child_runs_and_a_samples_table(tmp_path, mlflow_ui):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_launch(["-m", *SMALL, "regularizer=entropy,kl", "steps=3", "threads=1", f"cache_dir={tmp_path / 'cache'}",
                f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, timeout=900)
    runs = mlflow_runs(uri)
    (parent,) = [r for r in runs if r.data.tags.get("sweep_parent") == "true"]
    child = next(r for r in runs if r.info.run_name == "kl")
    exp = parent.info.experiment_id
    samples = Path(child.info.artifact_uri.removeprefix("file://")) / "samples" / "step_000000.json"
    table = json.loads(samples.read_text())
    assert isinstance(table, dict) and "columns" in table, "samples are not logged as an MLflow table (log_table)"
    first = table_rows(table)[0]
    assert (samples.parents[1] / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the end-of-run figure

    host = mlflow_ui(uri)
    browser = Browser(tmp_path / "chromium-profile")
    try:
        # the runs page: the parent, named after the grid; its row opens onto the two children
        browser.open(f"{host}/#/experiments/{exp}/runs")
        browser.until(f"document.body.innerText.includes({json.dumps(parent.info.run_name)})", "the parent run")
        assert parent.info.run_name == "regularizer=entropy,kl"
        browser.until(f"""(() => {{
            const rows = [...document.querySelectorAll('[role=row]')]
                .filter(r => r.innerText.includes({json.dumps(parent.info.run_name)}));
            const button = rows.map(r => r.querySelector('button')).find(b => b);
            if (button) button.click();
            return !!button; }})()""", "the parent run's expander")
        links = browser.until("""(() => {
            const names = [...document.querySelectorAll('a')].map(a => a.innerText.trim());
            return names.includes('entropy') && names.includes('kl') && names; })()""", "the child runs")
        assert {"entropy", "kl"} <= set(links)

        # one child's samples at step 0: a table whose cells hold what was logged
        browser.open(f"{host}/#/experiments/{exp}/runs/{child.info.run_id}/artifacts/samples/step_000000.json")
        cells = browser.until("""(() => {
            const cells = [...document.querySelectorAll('[role=cell]')].map(c => c.innerText.trim());
            return cells.length > 0 && cells; })()""", "the samples table")
        assert str(first["prompt"]) in cells and str(first["response"]) in cells, cells[:20]
        headers = browser.js("[...document.querySelectorAll('[role=columnheader]')].map(c => c.innerText.trim())")
        assert {"prompt", "response"} <= set(headers), headers
        assert '"columns"' not in browser.js("document.body.innerText")  # a table, not the JSON text
    finally:
        browser.close()
