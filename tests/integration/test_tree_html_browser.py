"""tree.html in a real browser: headless Chromium opens the page a real CLI run wrote.

The run is `python -m graphs.run` against the scripted endpoint on the toy task (no model
weights needed). The test counts the drawn nodes, clicks one, reads its code from the detail
panel, checks the page logged no JavaScript error, and saves a screenshot as a test artifact
(in $ITS_MLE_ARTIFACTS, default `test-artifacts/` in the repository, which git ignores).
Needs Debian's `chromium` and `chromium-driver` (installed by setup and CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_toy_task
from tests.doubles.stub import StubServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
                       reason="needs Debian's chromium and chromium-driver "
                              "(/usr/bin/chromium, /usr/bin/chromedriver): apt-get install chromium chromium-driver"),
]


def _artifacts() -> Path:
    path = Path(os.environ.get("ITS_MLE_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    task = make_toy_task(tmp / "toy")
    with StubServer() as server:
        proc = subprocess.run(
            [sys.executable, "-m", "graphs.run", "--task", str(task), "--base-url", server.base_url,
             "--steps", "6", "--run-dir", str(tmp / "runs"), "--run-id", "browser", "--exec-timeout", "30"],
            cwd=ROOT, capture_output=True, text=True, timeout=240,
        )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run = tmp / "runs" / "browser"
    assert (run / "tree.html").is_file(), proc.stdout
    return run


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_tree_html_draws_every_node_and_shows_a_clicked_nodes_code(run_dir, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tree = json.loads((run_dir / "tree.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    nodes = {n["id"]: n for n in tree["nodes"]}
    browser.get((run_dir / "tree.html").resolve().as_uri())
    drawn = browser.find_elements(By.CSS_SELECTOR, "svg g.node")
    assert len(drawn) == len(nodes) == 6
    assert sorted(g.get_attribute("data-node-id") for g in drawn) == sorted(nodes)

    def shown() -> list:
        return [s for s in browser.find_elements(By.CSS_SELECTOR, "section.detail") if s.is_displayed()]

    # the page opens on the best node
    first = summary["best_node_id"] or tree["nodes"][-1]["id"]
    (panel,) = shown()
    assert panel.get_attribute("data-detail-for") == first

    # click another node whose code differs from the one shown
    target = next(n for n in tree["nodes"] if n["id"] != first and n["code"] != nodes[first]["code"])
    # on its symbol, as a user does (the group's centre can fall between the symbol and its label)
    browser.find_element(By.CSS_SELECTOR, f'svg g.node[data-node-id="{target["id"]}"] .shape').click()
    WebDriverWait(browser, 10).until(lambda _: [s.get_attribute("data-detail-for") for s in shown()]
                                     == [target["id"]])
    (panel,) = shown()
    code = panel.find_element(By.CSS_SELECTOR, "pre.code").text
    assert code.strip() == target["code"].strip()
    assert f"Node {target['id']}" in panel.find_element(By.TAG_NAME, "h2").text
    selected = browser.find_elements(By.CSS_SELECTOR, "svg g.node.selected")
    assert [g.get_attribute("data-node-id") for g in selected] == [target["id"]]
    assert browser.execute_script("return location.hash") == "#" + target["id"]

    shot = _artifacts() / "tree_html.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []
