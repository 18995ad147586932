"""The Airflow and MLflow UIs in a real browser (headless Chromium + Selenium), against a ``make up``-style stack.

What a user does after ``make up``: log in; open each DAG's trigger form (the defaults must be accepted); see a
bad value refused with a reason; trigger ``mlsys_data`` from its form and let the Assets run ``mlsys_training``
and ``mlsys_batch_inference``; read the ``train`` task's log; follow its "View in MLflow" link to the run's
params, metrics, dataset and training-curve image; find the ``champion`` alias on the registered model.
Every step saves a screenshot (see ``conftest.py`` for where they go).
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.e2e

DAG_IDS = ("mlsys_data", "mlsys_training", "mlsys_batch_inference", "mlsys_model_selection", "mlsys_video_stream")
MODEL_NAME = "youtube-spam-classifier"
LINK_NAME = "View in MLflow"
UI_TIMEOUT = 30  # seconds for a page or an element to appear
RUN_TIMEOUT = 300  # seconds for one DAG run of the chain (10-30 s each here)

DIALOG = "[role=dialog][data-state=open]:has([data-testid=trigger-dag-submit])"
SUBMIT = "[data-testid=trigger-dag-submit]"


def wait(driver, timeout: float = UI_TIMEOUT) -> WebDriverWait:
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))


def shot(driver, shots, name: str) -> None:
    driver.save_screenshot(str(shots / f"{name}.png"))


def quoted(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def retype(element, text: str) -> None:
    """Replace an input's value as a user does: select all, delete, type."""
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.BACKSPACE)
    if text:
        element.send_keys(text)


# --- the trigger form --------------------------------------------------------------------------------------------

def dag_params(stack, dag_id: str) -> list[str]:
    return list(stack.client.api("GET", f"/api/v2/dags/{dag_id}/details")["params"])


def form_labels(driver) -> set[str]:
    dialog = driver.find_element(By.CSS_SELECTOR, DIALOG)
    return {label.text.replace("*", "").strip() for label in dialog.find_elements(By.CSS_SELECTOR, "label[data-part=label]")}


def field_errors(driver) -> dict[str, str]:
    """The form's fields marked invalid: label -> the message under the field ("" when it has none)."""
    dialog = driver.find_element(By.CSS_SELECTOR, DIALOG)
    errors = {}
    for root in dialog.find_elements(By.CSS_SELECTOR, "[data-part=root][data-invalid]"):
        labels = root.find_elements(By.CSS_SELECTOR, "label[data-part=label]")
        texts = root.find_elements(By.CSS_SELECTOR, "[data-part=error-text]")
        name = labels[0].text.replace("*", "").strip() if labels else root.text.split("\n", 1)[0]
        errors[name] = texts[0].text if texts else ""
    return errors


def open_trigger_form(driver, stack, dag_id: str):
    """The DAG page's Trigger button opens the form; returns its submit button once every param is shown."""
    params = dag_params(stack, dag_id)
    driver.get(f"{stack.api_url}/dags/{dag_id}")

    def opened(d):  # click Trigger until the form is open (a click before the page is ready does nothing)
        if any(dialog.is_displayed() for dialog in d.find_elements(By.CSS_SELECTOR, DIALOG)):
            return True
        for button in d.find_elements(By.CSS_SELECTOR, "[data-testid=trigger-dag-button]"):
            try:
                button.click()
            except WebDriverException:  # covered by the opening dialog, or not ready yet
                pass
        return False

    WebDriverWait(driver, UI_TIMEOUT, poll_frequency=1, ignored_exceptions=(StaleElementReferenceException,)).until(opened)
    try:
        wait(driver).until(lambda d: set(params) <= form_labels(d))
    except TimeoutException:
        pytest.fail(f"{dag_id}: the trigger form shows {sorted(form_labels(driver))}, not every param of {params}")
    return driver.find_element(By.CSS_SELECTOR, f"{DIALOG} {SUBMIT}")


def unpause_on_trigger(driver, dag_id: str) -> None:
    """Tick the form's "Unpause <dag> on trigger" box (it is shown while the DAG is paused)."""
    boxes = driver.find_elements(By.XPATH, f"//label[contains(normalize-space(.), 'Unpause {dag_id} on trigger')]")
    if boxes and not boxes[0].find_element(By.TAG_NAME, "input").is_selected():
        boxes[0].click()


def set_logical_date(driver, when: str) -> None:
    """Type a logical date (UTC) into the form's date-time picker."""
    at = datetime.fromisoformat(when).astimezone(UTC)
    dialog = driver.find_element(By.CSS_SELECTOR, DIALOG)
    dialog.find_element(By.CSS_SELECTOR, "[data-testid=datetime-input]").click()
    date = wait(driver).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "input[placeholder='YYYY/MM/DD']")))
    retype(date, at.strftime("%Y/%m/%d"))
    retype(driver.find_element(By.CSS_SELECTOR, "input[placeholder='HH:mm']"), at.strftime("%H:%M"))
    dialog.find_element(By.TAG_NAME, "h2").click()  # closes the picker, keeps the form
    shown = at.strftime("%b %d, %Y %H:%M")
    wait(driver, 5).until(lambda d: d.find_element(By.CSS_SELECTOR, f"{DIALOG} [data-testid=datetime-input]").text == shown)


def hide_mlflow_assistant(driver, mlflow_url: str) -> None:
    """Keep MLflow's "Assistant" side panel closed (it opens itself on the first visit and hides half the page)."""
    driver.get(f"{mlflow_url}/health")  # a plain page of MLflow's origin, whose localStorage the UI reads
    driver.execute_script("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                          "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")


def task_links_shown(driver, *task_ids: str, timeout: float = 10) -> None:
    """Wait (for a screenshot's sake, so no failure) until a run page lists its task instances."""
    xpath = " | ".join(f"//a[contains(@href, '/tasks/{t}') and normalize-space()='{t}']" for t in task_ids)
    try:
        wait(driver, timeout).until(lambda d: len(d.find_elements(By.XPATH, xpath)) >= len(task_ids))
    except TimeoutException:
        pass


def wait_for_run(stack, dag_id: str, run_id: str | None = None, after: str = "") -> dict:
    """The finished run (REST API); a failed or stuck one fails the test with its tasks' states."""
    from mlsys.airflow_client import AirflowError

    client = stack.client
    try:
        return client.wait_for_run(dag_id, run_id, after=after, timeout=RUN_TIMEOUT, alive=stack.stack.alive)
    except AirflowError as err:
        runs = [r for r in client.runs(dag_id) if r["dag_run_id"] == run_id or (run_id is None and r["queued_at"])]
        tasks = {t["task_id"]: t["state"] for r in runs[:1] for t in client.task_instances(dag_id, r["dag_run_id"])}
        pytest.fail(f"{err}\n{dag_id} runs: {[(r['dag_run_id'], r['state']) for r in runs[:3]]}; tasks: {tasks}\n"
                    f"the stack's logs: {stack.home / 'logs'}")


# --- fixtures ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ui(stack, browser, shots):
    """The browser, logged in to Airflow through its login form with the generated admin password."""
    browser.get(stack.api_url + "/")
    wait(browser).until(EC.visibility_of_element_located((By.NAME, "username"))).send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(stack.password)
    shot(browser, shots, "01-login")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda d: d.get_cookie("_token") and "/auth/login" not in d.current_url)
    hide_mlflow_assistant(browser, stack.mlflow_url)
    return browser


@pytest.fixture(scope="module")
def chain(stack, ui, shots):
    """Trigger mlsys_data from its form (click Trigger); wait (REST API) until the Assets have run the chain."""
    client, driver = stack.client, ui
    # The form takes the pending nightly run's logical date: the "unpause on trigger" box then does not also
    # make the scheduler start that nightly run (catchup=False), so this trigger is what starts the chain.
    pending = (client.dag("mlsys_data") or {}).get("next_dagrun_logical_date")
    submit = open_trigger_form(driver, stack, "mlsys_data")
    if pending:
        set_logical_date(driver, pending)
    unpause_on_trigger(driver, "mlsys_data")
    shot(driver, shots, "05-trigger-mlsys_data")
    started = datetime.now(UTC).isoformat()
    assert submit.is_enabled(), f"mlsys_data: Trigger is disabled; fields marked invalid: {field_errors(driver)}"
    submit.click()
    wait(driver).until(lambda d: "/dags/mlsys_data/runs/" in d.current_url)
    run_id = urllib.parse.unquote(driver.current_url.split("/runs/", 1)[1].split("/")[0].split("?")[0])
    task_links_shown(driver, "ingest", "label", "validate")
    shot(driver, shots, "06-run-mlsys_data")
    data = wait_for_run(stack, "mlsys_data", run_id=run_id)
    training = wait_for_run(stack, "mlsys_training", after=started)
    batch = wait_for_run(stack, "mlsys_batch_inference", after=started)
    return SimpleNamespace(data=data, training=training, batch=batch)


@pytest.fixture(scope="module")
def train_link(stack, chain) -> str:
    """The "View in MLflow" URL the API lists for the train task of the chain's mlsys_training run."""
    run = quoted(chain.training["dag_run_id"])
    links = stack.client.api("GET", f"/api/v2/dags/mlsys_training/dagRuns/{run}/taskInstances/train/links")
    url = (links.get("extra_links") or {}).get(LINK_NAME)
    assert url, f"no {LINK_NAME!r} link on mlsys_training.train: {links}"
    return url


# --- tests -------------------------------------------------------------------------------------------------------

def test_login_shows_the_project_dags(stack, ui, shots):
    ui.get(f"{stack.api_url}/dags")
    for dag_id in DAG_IDS:
        wait(ui).until(EC.visibility_of_element_located((By.XPATH, f"//a[normalize-space()='{dag_id}']")))
    shot(ui, shots, "02-dags")


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_trigger_form_accepts_the_defaults(stack, ui, shots, dag_id):
    submit = open_trigger_form(ui, stack, dag_id)
    try:
        wait(ui, 5).until(lambda _: submit.is_enabled())
    except TimeoutException:
        pass
    shot(ui, shots, f"03-form-{dag_id}")
    errors = field_errors(ui)
    assert errors == {}, f"{dag_id}: with its defaults the form marks fields invalid: {errors}"
    assert submit.is_enabled(), f"{dag_id}: with its defaults the Trigger button is disabled"


def test_a_bad_value_in_the_form_is_refused_with_a_reason(stack, ui, shots):
    client = stack.client
    runs_before = {r["dag_run_id"] for r in client.runs("mlsys_training")}
    submit = open_trigger_form(ui, stack, "mlsys_training")
    dialog = ui.find_element(By.CSS_SELECTOR, DIALOG)

    # epochs (minimum 1): the number field does not keep a 0; it goes back to the minimum when left.
    epochs = dialog.find_element(By.NAME, "element_epochs")
    retype(epochs, "0")
    epochs.send_keys(Keys.TAB)
    wait(ui, 5).until(lambda _: epochs.get_attribute("value") == "1")
    shot(ui, shots, "04a-bad-value-epochs")

    # lr (exclusiveMinimum 0): Trigger sends it, the API refuses it, and the form says which param and why.
    lr = dialog.find_element(By.NAME, "element_lr")
    default_lr = lr.get_attribute("value")
    retype(lr, "0")
    submit.click()
    try:
        message = wait(ui).until(lambda d: (t := d.find_element(By.CSS_SELECTOR, DIALOG).text)
                                 and "Invalid input for param lr" in t and t)
    except TimeoutException:
        pytest.fail(f"no reason shown for lr=0; the dialog says:\n{ui.find_element(By.CSS_SELECTOR, DIALOG).text[:1500]}")
    assert "minimum of 0" in message
    reason = dialog.find_element(By.XPATH, ".//*[contains(text(), 'Invalid input for param lr')]")
    ui.execute_script("arguments[0].scrollIntoView({block: 'center'})", reason)
    shot(ui, shots, "04b-bad-value-lr")
    assert {r["dag_run_id"] for r in client.runs("mlsys_training")} == runs_before, "a refused trigger created a run"

    # A required field left empty: Trigger is disabled and the field says why.
    retype(lr, default_lr)
    dataset_version = dialog.find_element(By.NAME, "element_dataset_version")
    retype(dataset_version, "")
    wait(ui, 5).until(lambda _: not submit.is_enabled())
    ui.execute_script("arguments[0].scrollIntoView({block: 'center'})", dataset_version)
    errors = field_errors(ui)
    assert "required" in errors.get("dataset_version", "").lower(), errors
    shot(ui, shots, "04c-bad-value-required")


def test_trigger_from_the_form_runs_the_asset_chain(stack, chain, ui, shots):
    client = stack.client
    assert chain.data["run_type"] == "manual"
    assert chain.training["run_type"] == "asset_triggered"
    assert chain.batch["run_type"] == "asset_triggered"
    # Each downstream run was started by the Asset events of the run before it.
    for dag_id, run, upstream in (("mlsys_training", chain.training, chain.data),
                                  ("mlsys_batch_inference", chain.batch, chain.training)):
        events = client.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted(run['dag_run_id'])}/upstreamAssetEvents")
        sources = {e.get("source_run_id") for e in events["asset_events"]}
        assert upstream["dag_run_id"] in sources, f"{dag_id} {run['dag_run_id']} was started by {sources}"
    ui.get(f"{stack.api_url}/dags/mlsys_training/runs/{quoted(chain.training['dag_run_id'])}")
    task_links_shown(ui, "train", "evaluate_register")
    shot(ui, shots, "07-run-mlsys_training")


def test_task_log_page_shows_the_stage_output(stack, chain, train_link, ui, shots):
    run_id = chain.training["dag_run_id"]
    mlflow_run_id = train_link.rstrip("/").rsplit("/", 1)[-1]
    ui.get(f"{stack.api_url}/dags/mlsys_training/runs/{quoted(run_id)}/tasks/train")

    def log_text(driver):
        # The log is a virtualized list: scroll it to the end, where the stage's result is.
        box = driver.find_element(By.CSS_SELECTOR, "[data-testid=virtual-scroll-container]")
        driver.execute_script("arguments[0].scrollTop = arguments[0].scrollHeight", box)
        text = box.text
        return text if "Returned value was" in text else False

    try:
        text = wait(ui).until(log_text)
    except TimeoutException:
        pytest.fail("the train task's log page never showed the task's result; the API's log:\n"
                    + stack.client.task_log("mlsys_training", run_id, "train")[-3000:])
    # The train stage's own output: its result (model URI, final loss) and the MLflow run it logged to.
    for expected in ("'model_uri': 'models:/", "final_train_loss", mlflow_run_id):
        assert expected in text, f"{expected!r} not on the train task's log page:\n{text[-3000:]}"
    # ... and its progress lines, earlier in the same log (the UI's list is virtualized: read them from the API)
    full = stack.client.task_log("mlsys_training", run_id, "train")
    assert "epoch 1/" in full and "train loss" in full, full[-3000:]
    shot(ui, shots, "08-log-train")


def test_view_in_mlflow_link_opens_the_run_with_params_metrics_datasets_and_an_image(stack, chain, train_link, ui,
                                                                                      shots):
    run_id = chain.training["dag_run_id"]
    ui.get(f"{stack.api_url}/dags/mlsys_training/runs/{quoted(run_id)}/tasks/train/details")
    link = wait(ui).until(EC.element_to_be_clickable((By.LINK_TEXT, LINK_NAME)))
    assert link.get_attribute("href") == train_link
    shot(ui, shots, "09-details-train")

    mlflow_run_id = train_link.rstrip("/").rsplit("/", 1)[-1]
    expected = stack.mlflow_api(f"/api/2.0/mlflow/runs/get?run_id={mlflow_run_id}")["run"]
    airflow_tab = ui.current_window_handle
    link.click()  # target=_blank: MLflow opens in a new tab
    wait(ui).until(lambda d: len(d.window_handles) == 2)
    ui.switch_to.window(next(h for h in ui.window_handles if h != airflow_tab))
    try:
        assert mlflow_run_id in ui.current_url
        wait(ui).until(lambda d: "Parameters (" in d.find_element(By.TAG_NAME, "body").text)
        text = ui.find_element(By.TAG_NAME, "body").text
        params = expected["data"].get("params", [])
        metrics = expected["data"].get("metrics", [])
        datasets = expected.get("inputs", {}).get("dataset_inputs", [])
        assert params and metrics and datasets, f"the train run logged too little: {expected}"
        missing = [p["key"] for p in params if p["key"] not in text or p["value"] not in text]
        missing += [m["key"] for m in metrics if m["key"] not in text]
        missing += [f"{d['dataset']['name']} ({d['dataset']['digest']})" for d in datasets
                    if f"{d['dataset']['name']} ({d['dataset']['digest']})" not in text]
        assert missing == [], f"not on the MLflow run page: {missing}"
        shot(ui, shots, "10-mlflow-run")

        ui.find_element(By.XPATH, "//*[@role='tab' and normalize-space()='Artifacts']").click()
        node = wait(ui).until(EC.element_to_be_clickable(
            (By.CSS_SELECTOR, "[data-testid=artifact-tree-node][artifact-name$='.png']")))
        name = node.get_attribute("artifact-name")
        node.click()
        image = wait(ui).until(EC.visibility_of_element_located((By.CSS_SELECTOR, f"img[alt='{name}']")))
        wait(ui).until(lambda _: image.get_property("complete") and image.get_property("naturalWidth") > 0)
        shot(ui, shots, "11-mlflow-image")
    finally:
        ui.close()
        ui.switch_to.window(airflow_tab)


def test_registered_model_page_shows_the_champion_alias(stack, chain, ui, shots):
    alias = stack.mlflow_api(f"/api/2.0/mlflow/registered-models/alias?name={MODEL_NAME}&alias=champion")
    champion = alias["model_version"]["version"]
    ui.get(f"{stack.mlflow_url}/#/models/{MODEL_NAME}")
    row = f"//*[@role='row'][.//a[normalize-space()='Version {champion}']]"
    try:
        wait(ui).until(lambda d: "champion" in d.find_element(By.XPATH, row).text)
    except TimeoutException:
        pytest.fail(f"no 'champion' alias on Version {champion}; the page says:\n"
                    + ui.find_element(By.TAG_NAME, "body").text[-2000:])
    shot(ui, shots, "12-mlflow-model")
