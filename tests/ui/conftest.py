"""Fixtures for the browser tests: a real ``make up``-style stack and a headless Chromium driven by Selenium.

- ``stack``: ``airflow standalone`` + ``mlflow server`` (``mlsys.local.Stack``) on free ports and a fresh
  ``$MLSYS_HOME``, for the whole module; ``mlsys_training`` and ``mlsys_batch_inference`` unpaused as ``mlsys up``
  does (``mlsys.local.unpause``), ``mlsys_data`` left paused so that the test's own trigger (from the form) is what
  starts the Asset chain;
- ``browser``: one headless Chromium for the module (``/usr/bin/chromium`` + ``/usr/bin/chromedriver``);
- ``shots``: the folder the screenshots go to (``$MLSYS_UI_SHOTS``, default ``<pytest tmp>/ui-shots``);
- a failed test leaves ``FAILED-<test>.png`` and ``.html`` there, and the stack's logs are under ``<home>/logs``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlsys.bench.harness import free_port

CHROMIUM = os.environ.get("MLSYS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("MLSYS_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1400,1000",
)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the stack is local: never via a proxy


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item, so a fixture can see whether the test failed.
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def get_json(url: str, timeout: float = 10):
    with _OPENER.open(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait_for_mlflow(url: str, stack, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stack.alive()
        try:
            with _OPENER.open(f"{url}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the MLflow UI at {url} did not answer within {timeout:.0f} s; see {stack.log_dir}/mlflow.log")
        time.sleep(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The stack ``make up`` starts, on free ports and a fresh home.

    Yields ``stack`` (the ``Stack``), ``client`` (its ``AirflowClient``), ``api_url``, ``mlflow_url``,
    ``mlflow_api(path)`` (GET on MLflow's REST API), ``home`` and the admin ``password``.
    """
    from mlsys.local import DAGS, Stack, airflow_env, unpause

    home = tmp_path_factory.mktemp("ui-home")
    api_port, mlflow_port = free_port(), free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith(("AIRFLOW", "MLSYS_", "MLFLOW_TRACKING", "MLFLOW_S3")):
                mp.delenv(var)
        mp.setenv("MLSYS_HOME", str(home))
        mp.setenv("AIRFLOW__API__PORT", str(api_port))
        mp.setenv("AIRFLOW__API__WORKERS", "1")
        mp.setenv("MLSYS_MLFLOW_UI_URL", mlflow_url)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        with Stack(airflow_env(), mlflow_ui=True, log_dir=home / "logs") as running:
            running.wait_healthy()
            client = running.client
            client.wait_for_dags(list(DAGS), alive=running.alive)
            # What `mlsys up` does, except that mlsys_data stays paused: the test triggers it from its form
            # (which unpauses it), so no scheduled run starts the chain first. The others run when the Assets say.
            unpause(running, ("mlsys_training", "mlsys_batch_inference"))
            _wait_for_mlflow(mlflow_url, running)
            password = json.loads(client.password_file.read_text())["admin"]
            yield SimpleNamespace(stack=running, client=client, api_url=running.api_url, mlflow_url=mlflow_url,
                                  mlflow_api=lambda path: get_json(mlflow_url + path), home=home, password=password)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MLSYS_UI_SHOTS") or tmp_path_factory.getbasetemp() / "ui-shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(f"{missing} not found: install Chromium and its driver "
                    "(`apt-get install -y chromium chromium-driver`; `make test` does it)")
    options = webdriver.ChromeOptions()
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def _screenshot_on_failure(request, shots):
    """A failed test leaves the page it failed on (screenshot + HTML) in the shots folder."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed or "browser" not in request.fixturenames:
        return
    from selenium.common.exceptions import WebDriverException

    driver = request.getfixturevalue("browser")
    name = "FAILED-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)
    try:
        driver.save_screenshot(str(shots / f"{name}.png"))
        (shots / f"{name}.html").write_text(driver.page_source)
        print(f"\nthe page at failure ({driver.current_url}): {shots / name}.png")
    except (WebDriverException, OSError) as exc:  # the browser itself may be what failed
        print(f"\nno screenshot of the failure: {exc}")
