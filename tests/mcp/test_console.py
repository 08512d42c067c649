"""The research console (issue 17) in a real Chromium (Debian's, driven by Playwright through
`executable_path`; no browser download) against a real 4-worker service: ask from the form,
watch the tree fill live, read the cited report, download it, cancel, survive a killed
worker, keys, behind Caddy, at phone and desktop sizes, keyboard only, with axe-core."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.test_service import QUERY

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is installed by ./test.sh")]
playwright_api = pytest.importorskip("playwright.sync_api")

CLIENTS = Path(os.environ.get("MCP_CLIENTS_DIR", Path.home() / ".cache" / "mcp-orchestrator")) / "conformance"
AXE = CLIENTS / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps"]


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A page that records console errors, page errors and CSP violations for the whole flow."""

    def __init__(self, browser, width=1440, height=900, **context):
        self.context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True,
                                           **context)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.add_init_script(
            "window.__csp = []; document.addEventListener('securitypolicyviolation', "
            "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")

    def csp_violations(self) -> list[str]:
        return self.page.evaluate("window.__csp")

    def assert_clean(self):
        assert self.csp_violations() == [] and self.problems == [], (self.csp_violations(), self.problems)

    def close(self):
        self.context.close()


def ask(page, question: str, agents: int = 4, kind: str = "research"):
    page.get_by_label("Question").fill(question)
    if kind == "search":
        page.get_by_label("Search").check()
    page.get_by_label("Agents", exact=True).fill(str(agents))
    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**#/task/*")
    return page.url.rsplit("/", 1)[1]


def wait_state(page, state: str, timeout: float = 60):
    page.locator("#task-state").filter(has_text=state).wait_for(timeout=timeout * 1000)


def record_first_agent(page):
    page.evaluate("""() => { window.__firstAgent = null;
      new MutationObserver(() => { if (!window.__firstAgent && document.querySelector('#tree li.agent'))
        window.__firstAgent = Date.now(); }).observe(document.body, {childList: true, subtree: true}); }""")


def axe_violations(page) -> list[dict]:
    page.evaluate(AXE.read_text())  # evaluated by the driver, not a <script>: the CSP stays as it is
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": len(v["nodes"])} for v in result["violations"]
            if v["impact"] in ("serious", "critical")]


def test_a_research_from_the_form_fills_live_renders_the_cited_report_and_downloads(browser, service):
    SHOTS.mkdir(parents=True, exist_ok=True)
    view = Page(browser)
    page = view.page
    page.goto(f"{service.url}/")  # a browser's GET / lands on the console
    assert page.url.endswith("/ui/")
    page.get_by_role("button", name="Start").wait_for()
    assert page.locator("#sources input[value=local]").is_checked()
    assert "WIKIPEDIA_API_URL" in page.locator("#sources").text_content()  # a disabled source says how to enable it
    record_first_agent(page)
    task_id = ask(page, QUERY, agents=12)
    wait_state(page, "completed")
    report = page.get_by_role("region", name="Report")
    report.locator("h1, h2, h3, p").first.wait_for()
    completed_at = service.get(f"/tasks/{task_id}").json()["completed_at"]
    first_agent = page.evaluate("window.__firstAgent")
    assert first_agent and first_agent / 1000 < completed_at, "agent nodes appeared only after the end"
    assert page.get_by_role("progressbar", name="Progress").get_attribute("aria-valuenow") == "100"
    # the event list is the server's log, each event once
    events = service.get(f"/tasks/{task_id}/events").json()["events"]
    shown = [int(x) for x in page.locator("#event-list li").evaluate_all("els => els.map(e => e.dataset.id)")]
    assert shown == [e["id"] for e in events]
    assert page.locator("#timeline .lane").count() >= 12  # every agent and synthesis has a bar
    # every [Sn] is a link to its source row, and following one scrolls that row into view
    citations = report.locator("a.cite")
    assert citations.count() >= 1
    target = citations.first.get_attribute("data-source")
    citations.first.click()
    row = page.locator(f"#source-{target}")
    page.wait_for_function(
        "id => { const r = document.getElementById(id).getBoundingClientRect(); "
        "return r.top >= 0 && r.bottom <= innerHeight; }", arg=f"source-{target}")
    assert row.evaluate("r => r.classList.contains('targeted')")
    assert "verified" in page.locator("#verification").inner_text()
    # a download works: the Markdown report, from the service, with the key-less fetch
    with page.expect_download() as download:
        page.get_by_role("button", name="Markdown").click()
    saved = Path(download.value.path()).read_text()
    assert f"[{target}]" in saved
    page.evaluate("scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "console-1440x900.png"), full_page=False)
    assert axe_violations(page) == []
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "console-390x844.png"), full_page=False)
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth + 1"), "horizontal scroll at 390 px"
    assert axe_violations(page) == []
    # the task list finds it, and the status page answers
    page.goto(f"{service.url}/ui/#/tasks")
    page.get_by_role("link", name=QUERY).first.wait_for()
    page.goto(f"{service.url}/ui/#/status")
    page.locator("#status-body dd").first.wait_for()
    assert "healthy" in page.locator("#status-body").inner_text()
    view.assert_clean()
    view.close()


def test_keyboard_only_and_the_dark_preference(browser, service):
    view = Page(browser, color_scheme="dark")
    page = view.page
    page.goto(f"{service.url}/ui/")
    page.get_by_role("button", name="Start").wait_for()
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "query":
            break
    assert page.evaluate("document.activeElement.id") == "query"
    page.keyboard.type("How do webhooks sign their deliveries?")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Start":
            break
    page.keyboard.press("Enter")
    wait_state(page, "completed")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background in ("rgb(15, 19, 24)",), background  # the dark palette
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "console-dark-1440x900.png"))
    view.assert_clean()
    view.close()


def test_cancel_from_the_console_ends_a_slow_research_cancelled(browser, service_factory, fake_llm):
    fake_llm.state.latency = 2.0
    service = service_factory({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                               "OPENAI_API_KEY": "sk-test"})
    view = Page(browser)
    page = view.page
    page.goto(f"{service.url}/ui/")
    task_id = ask(page, QUERY, agents=4)
    page.locator("#tree li.agent").first.wait_for(timeout=30000)
    page.get_by_role("button", name="Cancel").click()
    wait_state(page, "cancelled", timeout=30)
    assert service.get(f"/tasks/{task_id}").json()["status"] == "cancelled"
    assert page.get_by_role("button", name="Cancel").is_disabled()
    view.assert_clean()
    view.close()


def test_a_killed_worker_streaming_to_the_page_leaves_no_gap_and_no_duplicate(browser, service_factory, fake_llm):
    fake_llm.state.latency = 1.0
    service = service_factory({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                               "OPENAI_API_KEY": "sk-test"})
    view = Page(browser)
    page = view.page
    page.goto(f"{service.url}/ui/")
    task_id = ask(page, QUERY, agents=6)
    page.locator("#event-list li").nth(3).wait_for(state="attached", timeout=30000)
    streaming = [w for w in service.get("/stats").json()["workers"] if int(w.get("active_streams", 0)) > 0]
    deadline = time.monotonic() + 15
    while not streaming and time.monotonic() < deadline:  # heartbeats report streams every few seconds
        time.sleep(0.5)
        streaming = [w for w in service.get("/stats").json()["workers"] if int(w.get("active_streams", 0)) > 0]
    assert streaming, "no worker reports the page's stream"
    os.kill(int(streaming[0]["pid"]), signal.SIGKILL)
    wait_state(page, "completed", timeout=120)
    events = service.get(f"/tasks/{task_id}/events").json()["events"]
    shown = [int(x) for x in page.locator("#event-list li").evaluate_all("els => els.map(e => e.dataset.id)")]
    assert shown == [e["id"] for e in events] == list(range(1, len(events) + 1))
    view.close()


def test_keys_the_prompt_a_refused_key_and_another_keys_tasks_never_shown(browser, service_factory):
    service = service_factory({"API_KEYS": "alice:alice-secret,bob:bob-secret"})
    bobs = requests.post(f"{service.url}/tools/orchestrate_search", headers={"X-API-Key": "bob-secret"},
                         json={"query": "bob's private question"}, timeout=10).json()["task_id"]
    view = Page(browser)
    page = view.page
    page.goto(f"{service.url}/ui/")
    dialog = page.get_by_role("dialog", name="API key")
    dialog.wait_for()
    page.get_by_label("Key", exact=True).fill("not-a-key")
    page.get_by_role("button", name="Use key").click()
    page.get_by_text("That key was refused").wait_for()
    page.get_by_label("Key", exact=True).fill("alice-secret")
    page.get_by_role("button", name="Use key").click()
    page.get_by_role("button", name="Start").wait_for()
    assert page.evaluate("sessionStorage.getItem('mcp-orchestrator.api-key')") == "alice-secret"
    assert "alice-secret" not in page.url
    ask(page, "alice asks about streams", agents=2)
    wait_state(page, "completed")
    page.goto(f"{service.url}/ui/#/tasks")
    page.get_by_role("link", name="alice asks about streams").wait_for()
    assert "bob's private question" not in page.locator("#tasks-table").inner_text()
    page.goto(f"{service.url}/ui/#/task/{bobs}")
    page.get_by_text("No such task").wait_for()
    # the refused key (401) and bob's task (404) are the only errors the browser logged
    assert all("status of 401" in p or "status of 404" in p for p in view.problems), view.problems
    assert view.csp_violations() == []
    view.close()


def test_behind_caddy_under_mcp_ui(browser, service_factory, tmp_path):
    from tests.test_caddy import API_KEYS, Caddy

    service = service_factory({"API_KEYS": API_KEYS})
    caddy = Caddy(ROOT / "deploy" / "Caddyfile", {"UPSTREAM": f"127.0.0.1:{service.port}"}, tmp_path / "caddy.log",
                  tls=True)
    try:
        view = Page(browser, ignore_https_errors=True)
        page = view.page
        page.goto(f"{caddy.url}/mcp/")  # the browser's GET of the MCP root redirects to the console
        assert page.url == f"{caddy.url}/mcp/ui/"
        page.get_by_label("Key", exact=True).fill(API_KEYS.split(":", 1)[1])
        page.get_by_role("button", name="Use key").click()
        ask(page, QUERY, agents=3)
        wait_state(page, "completed")
        page.get_by_role("region", name="Report").locator("a.cite").first.wait_for()
        with page.expect_download() as download:
            page.get_by_role("button", name="Markdown").click()
        assert Path(download.value.path()).read_text().strip()
        assert view.csp_violations() == []
        assert all("status of 401" in p for p in view.problems), view.problems  # the prompt's own 401
        view.close()
    finally:
        caddy.stop()


def test_the_console_is_served_with_a_strict_policy_and_nothing_else_leaks(service):
    page = requests.get(f"{service.url}/ui/", timeout=10)
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text and " style=" not in page.text and " on" not in page.text.replace(" only", "")
    for asset in ("app.js", "api.js", "task.js", "render.js", "app.css", "vendor/marked.esm.js", "vendor/purify.es.js"):
        reply = requests.get(f"{service.url}/ui/{asset}", timeout=10)
        assert reply.status_code == 200 and reply.headers["Content-Security-Policy"] == csp
    assert requests.get(f"{service.url}/ui/../app.py", timeout=10).status_code == 404
    assert requests.get(f"{service.url}/ui/%2e%2e/app.py", timeout=10).status_code == 404
    assert requests.get(f"{service.url}/", timeout=10).json()["endpoints"]["ui"] == "/ui/"
    vendored = (ROOT / "mcp" / "http" / "ui" / "vendor" / "README.md").read_text()
    assert "18.2.1" in vendored and "3.5.0" in vendored
    assert json.loads(json.dumps(requests.get(f"{service.url}/", headers={"Accept": "text/html"},
                                              allow_redirects=False, timeout=10).headers["Location"])) == "/ui/"
