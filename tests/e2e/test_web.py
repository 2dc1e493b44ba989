"""The web app at `/` in a real browser: Debian's Chromium, driven by Playwright, against a real
`lmdock serve` on the default model (a store of its own, and a local stand-in for the Hub).

Tests run in file order on one server; screenshots of each page go to test-artifacts/web/."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from lmdock.http.web import WEBAPP_DIR
from tests.conftest import DEFAULT_MODEL, REPO, Server, start_server
from tests.hf_fixture import FakeHub, write_gguf

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

QWEN = "qwen2.5-coder-0.5b-instruct"
ARTIFACTS = REPO / "test-artifacts" / "web"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
GENERATION_S = 600  # generous: the machine running the suite may be busy (2 tokens/s seen)
ASSISTANT = "article[data-role=assistant]"


def _metrics(server: Server) -> dict[str, float]:
    """The default model's counters from /metrics (counter names without `_total`)."""
    out: dict[str, float] = {}
    for line in httpx.get(f"{server.base_url}/metrics", timeout=10).text.splitlines():
        m = re.match(r'lmdock_(\w+?)(?:_total)?\{model="([^"]+)"\} (\S+)$', line)
        if m and m.group(2) == QWEN:
            out[m.group(1)] = float(m.group(3))
    return out


def _models(server: Server, headers: dict[str, str] | None = None) -> dict[str, dict]:
    r = httpx.get(f"{server.base_url}/api/v1/models", headers=headers, timeout=30)
    return {m["key"]: m for m in r.json()["models"]}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webhub")
    # 24 MB at 3 MB/s: huggingface_hub reports progress every 10 MB, so the bar is seen part-way.
    hub = FakeHub(bytes_per_second=3_000_000)
    gguf = write_gguf(tmp / "a.gguf", pad_floats=6_000_000)
    hub.add("acme/Tiny-GGUF", "tiny-Q4_K_M.gguf", gguf.read_bytes())
    yield hub.start()
    hub.stop()


@pytest.fixture(scope="module")
def web(tmp_path_factory, hub: FakeHub) -> Server:
    if not (WEBAPP_DIR / "index.html").is_file():
        pytest.fail("the web app is not built: run `make web`")
    tmp = tmp_path_factory.mktemp("web")
    store = tmp / "models"
    target = store / "Qwen" / "Qwen2.5-Coder-0.5B-Instruct-GGUF" / DEFAULT_MODEL.name
    target.parent.mkdir(parents=True)
    try:
        os.link(DEFAULT_MODEL, target)  # same bytes, no copy
    except OSError:
        shutil.copyfile(DEFAULT_MODEL, target)
    srv = start_server(
        tmp, "--ctx-size", "4096", env={"LMDOCK_MODELS_DIR": str(store), "HF_ENDPOINT": hub.url}
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `make browser` (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def _new_page(browser: Browser, problems: list[str]) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    # Failed API responses are logged by the browser itself; anything else (a CSP violation, a
    # script error) is a defect.
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    return page


@pytest.fixture
def page(browser: Browser, web: Server):
    problems: list[str] = []
    page = _new_page(browser, problems)
    yield page
    page.context.close()
    assert not problems, problems


def _open(page: Page, server: Server, route: str = "") -> None:
    page.goto(f"{server.base_url}/{route}")
    if not route or route == "#/chat":
        expect(page.get_by_role("combobox", name="Model")).to_have_value(QWEN)


def _settings(page: Page, **values: str) -> None:
    page.get_by_role("button", name="Settings").click()
    for label, value in values.items():
        page.get_by_label(label.replace("_", " "), exact=True).fill(value)
    page.get_by_role("button", name="Close settings").click()


def _send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")  # the keyboard path


def _usage(page: Page, nth: int = -1):
    return page.locator(ASSISTANT).nth(nth).get_by_test_id("usage")


USAGE = re.compile(
    r"prompt (\d+) tokens \((\d+) cached\) · (\d+) output tokens · ([\d.]+) tokens/s · "
    r"first token [\d.]+ s · (end_turn|max_tokens)"
)


def test_page_is_served_without_shadowing_the_api(web: Server):
    r = httpx.get(web.base_url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    bundle = re.search(r'src="(/_app/[^"]+\.js)"', r.text).group(1)
    js = httpx.get(web.base_url + bundle)
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "immutable" in js.headers["cache-control"]
    assert httpx.head(web.base_url + "/").status_code == 200
    assert httpx.get(web.base_url + "/health").json()["status"] == "ok"
    assert httpx.head(web.base_url + "/api/hello").status_code == 200
    assert httpx.get(web.base_url + "/_app/../pyproject.toml").status_code == 404
    assert httpx.get(web.base_url + "/_app/nope.js").status_code == 404
    assert httpx.get(web.base_url + "/v1/models").json()["data"][0]["id"]


def test_chat_streams_shows_usage_and_survives_a_reload(page: Page, web: Server):
    _open(page, web)
    _settings(page, Temperature="0", Max_tokens="48")
    # Record the answer's length on every DOM change: a streamed answer grows in many steps.
    page.evaluate(
        """() => {
            window.__lengths = [];
            new MutationObserver(() => {
                const el = document.querySelector('article[data-role=assistant] .markdown');
                if (el) window.__lengths.push(el.textContent.length);
            }).observe(document.querySelector('.messages'), {subtree: true, childList: true, characterData: true});
        }"""
    )
    before = _metrics(web)
    question = "Write a Python function that returns the sum of a list, in a fenced code block."
    _send(page, question)
    expect(_usage(page)).to_be_visible(timeout=GENERATION_S * 1000)
    usage = _usage(page).inner_text()
    m = USAGE.search(usage)
    assert m, usage
    lengths = sorted({n for n in page.evaluate("window.__lengths") if n > 0})
    assert len(lengths) >= 5, f"the answer did not stream in steps: {lengths}"
    # The numbers under the answer are the server's own.
    after = _metrics(web)
    assert int(m.group(3)) == after["generated_tokens"] - before["generated_tokens"]
    assert int(m.group(1)) == after["prompt_tokens"] - before["prompt_tokens"]
    assert int(m.group(2)) == after["cache_hit_tokens"] - before["cache_hit_tokens"]
    answer = page.locator(f"{ASSISTANT} .markdown").inner_text()
    assert "def " in answer
    expect(page.locator(f"{ASSISTANT} pre code.hljs .hljs-keyword").first).to_be_visible()

    # A second turn reuses the first one's prompt from the prefix cache, and says so.
    _settings(page, Max_tokens="12")
    _send(page, "Now add a docstring.")
    expect(_usage(page, 1)).to_be_visible(timeout=GENERATION_S * 1000)
    second = USAGE.search(_usage(page, 1).inner_text())
    assert second and int(second.group(2)) > 0, _usage(page, 1).inner_text()
    page.screenshot(path=str(ARTIFACTS / "chat.png"))

    page.reload()
    title = question[:57] + "…"
    expect(page.get_by_role("button", name=title, exact=True)).to_be_visible()
    expect(page.locator(ASSISTANT)).to_have_count(2)
    expect(page.locator(f"{ASSISTANT} .markdown").first).to_have_text(answer)
    expect(_usage(page, 0)).to_have_text(usage)


def test_stop_regenerate_and_edit(page: Page, web: Server):
    _open(page, web)
    _settings(page, Max_tokens="1500")
    _send(page, "Count from 1 to 1000, one number per line.")
    answer = page.locator(f"{ASSISTANT} .markdown")
    page.wait_for_function(
        "() => (document.querySelector('article[data-role=assistant] .markdown')?.textContent ?? '').length > 30",
        timeout=GENERATION_S * 1000,
    )
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(_usage(page)).to_contain_text("stopped")
    stopped_text = answer.inner_text()
    # The server ended the sequence too: nothing is decoding, and the counter stops short of the limit.
    deadline = time.monotonic() + 15
    while _metrics(web).get("active_sequences", 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _metrics(web)["active_sequences"] == 0
    time.sleep(1)
    assert answer.inner_text() == stopped_text

    # Regenerate replaces the answer; Esc (the keyboard) stops it again.
    page.get_by_role("button", name="Regenerate").click()
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    page.wait_for_function(
        "() => (document.querySelector('article[data-role=assistant] .markdown')?.textContent ?? '').length > 10",
        timeout=GENERATION_S * 1000,
    )
    page.keyboard.press("Escape")
    expect(_usage(page)).to_contain_text("stopped")
    expect(page.locator(ASSISTANT)).to_have_count(1)

    # Editing the question drops the old answer and asks again.
    _settings(page, Max_tokens="20")
    page.get_by_role("button", name="Edit").click()
    edit = page.get_by_role("textbox", name="Edit message")
    expect(edit).to_be_focused()
    edit.fill("Say just the word: hello")
    edit.press("Enter")
    expect(_usage(page)).to_be_visible(timeout=GENERATION_S * 1000)
    expect(page.locator(ASSISTANT)).to_have_count(1)
    expect(page.locator("article[data-role=user]")).to_have_text(re.compile("Say just the word: hello"))
    assert "stopped" not in _usage(page).inner_text()


def test_conversations_survive_a_server_restart(browser: Browser, tmp_path_factory):
    """Conversations live in the browser: a new server process on the same address finds them."""
    tmp = tmp_path_factory.mktemp("webrestart")
    srv = start_server(tmp, "--ctx-size", "2048")
    problems: list[str] = []
    page = _new_page(browser, problems)
    try:
        _open(page, srv)
        _settings(page, Max_tokens="8")
        _send(page, "Say hello.")
        expect(_usage(page)).to_be_visible(timeout=GENERATION_S * 1000)
        answer = page.locator(f"{ASSISTANT} .markdown").inner_text()
        srv.stop()
        srv = start_server(tmp, "--ctx-size", "2048", port=int(srv.base_url.rsplit(":", 1)[1]))
        page.reload()
        expect(page.get_by_role("button", name="Say hello.", exact=True)).to_be_visible()
        expect(page.locator(f"{ASSISTANT} .markdown")).to_have_text(answer)
        _send(page, "Again.")  # and the conversation goes on
        expect(_usage(page, 1)).to_be_visible(timeout=GENERATION_S * 1000)
        assert not problems, problems
    finally:
        page.context.close()
        srv.stop()


def test_api_errors_are_readable(page: Page, web: Server):
    _open(page, web)
    _settings(page, Temperature="7")
    _send(page, "Hello")
    error = page.locator(f"{ASSISTANT} .error")
    expect(error).to_contain_text("400 invalid_request_error")
    expect(error).to_contain_text("temperature")


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_tool_call_and_its_result(page: Page, web: Server):
    _open(page, web)
    page.get_by_role("button", name="Settings").click()
    page.get_by_label("Tools (JSON array of Anthropic tool definitions)").fill(json.dumps([WEATHER_TOOL]))
    page.get_by_label("Tool choice").select_option("any")
    page.get_by_label("Max tokens", exact=True).fill("60")
    page.get_by_role("button", name="Close settings").click()
    _send(page, "What is the weather in Paris?")
    expect(_usage(page)).to_contain_text("tool_use", timeout=GENERATION_S * 1000)
    call = page.locator(".tool-call")
    expect(call).to_contain_text("get_weather")
    assert "city" in json.loads(call.locator("pre").inner_text())

    # The next message is the tool's result; the model answers from it.
    page.get_by_role("button", name="Settings").click()
    page.get_by_label("Tool choice").select_option("none")
    page.get_by_label("Max tokens", exact=True).fill("20")
    page.get_by_role("button", name="Close settings").click()
    result = page.get_by_role("textbox", name="Result for tool get_weather")
    result.fill("Sunny, 21 degrees")
    result.press("Enter")
    expect(_usage(page, 1)).to_be_visible(timeout=GENERATION_S * 1000)
    expect(page.locator(".tool-result")).to_contain_text("Sunny, 21 degrees")
    expect(page.locator(f"{ASSISTANT} .error")).to_have_count(0)
    assert page.locator(ASSISTANT).nth(1).locator(".markdown").inner_text().strip()


def test_model_output_is_rendered_safely(browser: Browser, web: Server):
    """Markdown, highlighting, folded thinking and tool calls, from stored blocks: hostile HTML in model
    output never runs."""
    conv = {
        "id": "conv_seeded",
        "title": "Seeded",
        "created": 1,
        "updated": 1,
        "settings": {"model": QWEN},
        "messages": [
            {"id": "m1", "role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "id": "m2",
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "The user wants the weather.", "signature": "sig"},
                    {
                        "type": "text",
                        "text": '# Title\n\n<img src=x onerror="window.__pwned=1">'
                        "<script>window.__pwned=2</script>\n\n[link](javascript:window.__pwned=3)\n\n"
                        "```python\ndef f(x):\n    return x + 1\n```\n",
                    },
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
                "stats": {"model": QWEN, "input_tokens": 5, "cache_read_input_tokens": 0, "output_tokens": 9},
            },
        ],
    }
    problems: list[str] = []
    page = _new_page(browser, problems)
    page.add_init_script(f"localStorage.setItem('lmdock.conversations.v1', {json.dumps(json.dumps([conv]))})")
    page.goto(web.base_url + "/")
    expect(page.locator(".markdown h1")).to_have_text("Title")
    expect(page.locator("pre code.hljs .hljs-keyword").first).to_have_text("def")
    assert page.locator(".markdown img, .markdown script").count() == 0
    assert page.locator(".markdown a[href^='javascript']").count() == 0
    assert page.evaluate("window.__pwned") is None
    thinking = page.locator("details.thinking")
    expect(thinking).to_contain_text("Thinking")
    assert thinking.evaluate("d => d.open") is False
    thinking.locator("summary").click()
    expect(thinking).to_contain_text("The user wants the weather.")
    expect(page.locator(".tool-call")).to_contain_text("get_weather")
    expect(page.locator(".tool-call pre")).to_contain_text('"city": "Paris"')
    # The next message answers the tool call.
    expect(page.get_by_role("textbox", name="Result for tool get_weather")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "chat-blocks.png"))
    page.context.close()
    # Chromium reports the hostile handler as a CSP violation while DOMPurify parses it (in an inert
    # document, where it never runs): the policy is the second fence. Nothing else may go wrong.
    assert not [p for p in problems if "Content Security Policy" not in p], problems


def test_models_page_loads_and_unloads(page: Page, web: Server):
    _open(page, web, "#/models")
    row = page.locator(f"tr[data-model='{QWEN}']")
    state = row.get_by_test_id("state")
    expect(state).to_have_text("loaded")
    expect(row).to_contain_text("Q4_K_M")
    expect(row).to_contain_text("MB")
    expect(row).to_contain_text("at 4,096 context")
    estimate = row.get_by_test_id("memory-estimate")  # f16 and q8_0 K/V at that context
    expect(estimate).to_contain_text("f16")
    expect(estimate).to_contain_text("q8_0")
    expect(estimate).to_contain_text("available")
    expect(row.locator(".badge", has_text="tools")).to_be_visible()

    row.get_by_role("button", name=f"Unload {QWEN}", exact=True).click()
    expect(state).to_have_text("not-loaded", timeout=60_000)
    assert _models(web)[QWEN]["state"] == "not-loaded"

    row.get_by_label(f"Context length for {QWEN}").fill("2048")
    row.get_by_label(f"Parallel sequences for {QWEN}").fill("2")
    row.get_by_label(f"TTL seconds for {QWEN}").fill("900")
    row.get_by_label(f"KV cache type for {QWEN}").select_option("q8_0")
    row.get_by_role("button", name=f"Load {QWEN}", exact=True).click()
    expect(state).to_have_text("loaded", timeout=GENERATION_S * 1000)
    expect(page.get_by_role("status")).to_contain_text(f"Loaded {QWEN}")
    entry = _models(web)[QWEN]
    assert entry["state"] == "loaded"
    assert entry["loaded_instances"][0]["config"] == {
        **entry["loaded_instances"][0]["config"],
        "context_length": 2048,
        "parallel": 2,
        "ttl_seconds": 900,
        "cache_type_k": "q8_0",
        "cache_type_v": "q8_0",
    }
    expect(row).to_contain_text("ctx 2048 · parallel 2 · KV q8_0 · FA on · ttl 900s")


def test_download_shows_live_progress(page: Page, web: Server):
    _open(page, web, "#/models")
    page.get_by_label("Repository").fill("acme/Tiny-GGUF")
    page.get_by_label("File or quantization (optional)").fill("tiny-Q4_K_M.gguf")
    page.get_by_role("button", name="Download").click()
    job = page.locator("li[data-job]").first
    # The bar moves while the (throttled) download runs, then completes.
    page.wait_for_function(
        "() => { const p = document.querySelector('li[data-job] progress'); return p && p.value > 0 && p.value < 100; }",
        timeout=30_000,
    )
    expect(job.get_by_test_id("job-status")).to_contain_text("%")
    expect(job.get_by_test_id("job-status")).to_contain_text("completed", timeout=60_000)
    key = next(k for k in _models(web) if k != QWEN)
    expect(page.locator(f"tr[data-model='{key}']")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "models.png"), full_page=True)


def test_server_page_shows_metrics_log_and_snippets(page: Page, web: Server):
    _open(page, web, "#/server")
    expect(page.get_by_role("status").filter(has_text="live")).to_be_visible()
    group = page.locator(f".metric-group[data-model='{QWEN}']")
    expect(group).to_contain_text("tokens/s")
    expect(group).to_contain_text("cache hit rate")
    charts = group.locator("figure.chart")
    expect(charts).to_have_count(3)
    for name in ("tokens", "queue", "hits"):
        expect(group.locator(f"figure[data-chart='{name}'] canvas")).to_be_visible()

    def ask(text: str) -> None:
        r = httpx.post(
            f"{web.base_url}/v1/messages",
            json={"model": QWEN, "max_tokens": 5, "messages": [{"role": "user", "content": text}]},
            timeout=GENERATION_S,
        )
        assert r.status_code == 200

    ask("Hi")
    row = page.locator("table.log tbody tr", has_text="POST /v1/messages").first
    expect(row).to_contain_text(QWEN)
    expect(row).to_contain_text("200")
    ask("Hi")  # the same prompt again: its whole prefix comes from the resident slot
    expect(row.get_by_test_id("cache")).to_contain_text("slot")
    # The charts follow the polls: tokens were generated and prompt tokens hit the cache in the window.
    for name in ("tokens", "hits"):
        page.wait_for_function(
            f"() => Number(document.querySelector(\"figure[data-chart='{name}']\").dataset.peak) > 0",
            timeout=30_000,
        )
    # A prompt that shares only the start of the cached one says where it left it, and with what text.
    ask("Tell me about the moon")
    cache = row.get_by_test_id("cache")
    expect(cache).to_contain_text("diverged at token")
    cache.locator("summary").click()
    expect(cache.locator(".diverged")).to_contain_text("Tell me")
    # The metrics view follows /metrics (polled): the request shows up in the counters.
    expect(group.locator("div", has=page.locator("dt", has_text="requests")).locator("dd")).not_to_have_text(
        "0", timeout=30_000
    )
    snippets = page.locator(".snippet")
    expect(snippets.nth(0)).to_contain_text(f"ANTHROPIC_BASE_URL={web.base_url}")
    expect(snippets.nth(0)).to_contain_text(f"ANTHROPIC_MODEL={QWEN}")
    expect(snippets.nth(1)).to_contain_text(f'base_url="{web.base_url}"')
    expect(snippets.nth(2)).to_contain_text(f'base_url="{web.base_url}/v1"')
    expect(snippets.nth(2)).to_contain_text(f'model="{QWEN}"')
    page.screenshot(path=str(ARTIFACTS / "server.png"), full_page=True)


def test_api_key_is_asked_once_and_kept(browser: Browser, tmp_path_factory):
    srv = start_server(
        tmp_path_factory.mktemp("webkey"),
        "--api-key",
        "web-secret",
        "--admin-key",
        "web-admin",
        "--ctx-size",
        "2048",
    )
    problems: list[str] = []
    page = _new_page(browser, problems)
    try:
        assert httpx.get(srv.base_url + "/").status_code == 200  # the page itself needs no key
        assert httpx.get(srv.base_url + "/api/v1/models").status_code == 401
        page.goto(srv.base_url + "/")
        dialog = page.get_by_role("dialog", name="API key")
        expect(dialog).to_be_visible()
        page.get_by_role("textbox", name="API key").fill("wrong-key")
        page.get_by_role("button", name="Save key").click()
        expect(dialog).to_contain_text("refused the saved key")
        expect(dialog).to_contain_text("invalid x-api-key")  # the server's own words
        page.screenshot(path=str(ARTIFACTS / "api-key.png"))
        page.get_by_role("textbox", name="API key").fill("web-secret")
        page.get_by_role("textbox", name="API key").press("Enter")
        expect(dialog).to_be_hidden()
        expect(page.get_by_role("combobox", name="Model")).to_have_value(QWEN)
        _settings(page, Max_tokens="20")
        _send(page, "Say hello.")
        expect(_usage(page)).to_be_visible(timeout=GENERATION_S * 1000)
        page.screenshot(path=str(ARTIFACTS / "chat-api-key.png"))

        page.reload()  # the key was kept: no question this time
        expect(page.get_by_role("combobox", name="Model")).to_have_value(QWEN)
        expect(dialog).to_be_hidden()
        page.goto(srv.base_url + "/#/server")
        expect(page.get_by_role("status").filter(has_text="live")).to_be_visible()

        # Unloading needs the admin key: the page asks for it, quoting the server.
        page.goto(srv.base_url + "/#/models")
        unload = page.get_by_role("button", name=f"Unload {QWEN}", exact=True)
        unload.click()
        expect(dialog).to_contain_text("admin key")
        page.get_by_role("textbox", name="API key").fill("web-admin")
        page.get_by_role("button", name="Save key").click()
        expect(dialog).to_be_hidden()
        unload.click()
        state = page.locator(f"tr[data-model='{QWEN}']").get_by_test_id("state")
        expect(state).to_have_text("not-loaded", timeout=60_000)
        assert _models(srv, {"x-api-key": "web-secret"})[QWEN]["state"] == "not-loaded"
        assert not problems, problems
    finally:
        page.context.close()
        srv.stop()
