"""``ar2diff serve`` against a live server on localhost: the official ``openai`` client in both
modes, streaming, the step stream, batching that leaves answers unchanged, and bad requests."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import save_tiny_model_folder

pytest.importorskip("fastapi")
pytest.importorskip("sse_starlette")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from ar2diff.decoding import DecodeOptions  # noqa: E402
from ar2diff.generation import TextGenerator  # noqa: E402
from ar2diff.likelihood import ar_log_likelihoods  # noqa: E402
from ar2diff.serving.app import ServeSettings, create_app  # noqa: E402
from ar2diff.serving.batcher import Batcher, Job, QueueFull  # noqa: E402
from ar2diff.serving.local import LocalServer  # noqa: E402

KEY = "test-key"
NAME = "tiny"
MODES = ("ar", "diffusion")


class LiveServer(LocalServer):
    """A live server with an OpenAI client and raw requests."""

    def client(self, key: str = KEY, timeout: float = 60):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | dict | None = None,
                key: str | None = KEY, timeout: float = 60) -> tuple[int, dict | str]:
        """``(status, parsed JSON or text)`` of a raw request."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return save_tiny_model_folder(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def gen(folder) -> TextGenerator:
    return TextGenerator.load(str(folder), device="cpu")


@pytest.fixture(scope="module")
def live(gen):
    settings = ServeSettings(model_name=NAME, api_key=KEY, max_tokens=64, timeout=60)
    with LiveServer(create_app(gen, settings)) as server:
        yield server


def _events(text: str) -> list[str]:
    return [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]


# ---- the openai client ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_openai_client_completion_chat_and_stream(live, gen, mode):
    client = live.client()
    extra = {"mode": mode, "seed": 3}
    done = client.completions.create(model=NAME, prompt="copy : 1 2 3", max_tokens=6,
                                     extra_body=extra)
    assert done.object == "text_completion" and len(done.choices) == 1
    direct = gen.generate(["copy : 1 2 3"], DecodeOptions(mode=mode, max_new_tokens=6, seed=3,
                                                          chat=False))[0][0]
    assert done.choices[0].text == direct
    assert done.usage.prompt_tokens == 5 and done.usage.total_tokens == 5 + done.usage.completion_tokens
    assert done.choices[0].finish_reason in ("stop", "length")

    messages = [{"role": "user", "content": "sort : 3 1 2"}]
    chat = client.chat.completions.create(model=NAME, messages=messages, max_tokens=6, extra_body=extra)
    answer = chat.choices[0].message
    assert answer.role == "assistant" and isinstance(answer.content, str)
    assert chat.usage.prompt_tokens == len(gen.encode_messages(messages))

    stream = client.chat.completions.create(model=NAME, messages=messages, max_tokens=6, stream=True,
                                            extra_body=extra)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.content  # the same seed gives the same answer, streamed or not
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_streams_end_with_done_and_several_completions(live):
    status, text = live.request("POST", "/v1/completions", {
        "model": NAME, "prompt": ["copy : 1 2", "sort : 2 1"], "max_tokens": 4, "n": 2,
        "stream": True, "mode": "diffusion", "seed": 1})
    assert status == 200
    events = _events(text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["choices"][0]["index"] for c in chunks if c["choices"]} == {0, 1, 2, 3}
    assert chunks[-1]["usage"]["prompt_tokens"] == 8
    status, whole = live.request("POST", "/v1/completions", {
        "model": NAME, "prompt": ["copy : 1 2", "sort : 2 1"], "max_tokens": 4, "n": 2,
        "mode": "diffusion", "seed": 1})
    streamed = {}
    for c in chunks:
        for ch in c["choices"]:
            streamed[ch["index"]] = streamed.get(ch["index"], "") + ch["text"]
    assert streamed == {ch["index"]: ch["text"] for ch in whole["choices"]}
    assert whole["usage"]["completion_tokens"] == chunks[-1]["usage"]["completion_tokens"]


def test_the_reveal_order_reaches_the_sampler(live, gen):
    client = live.client()
    texts = {}
    for order in ("confidence", "left-to-right"):
        done = client.completions.create(model=NAME, prompt="copy : 1 2 3", max_tokens=8, extra_body={
            "mode": "diffusion", "seed": 4, "order": order, "eos_stop": False, "eos_penalty": 1e9})
        texts[order] = done.choices[0].text
        assert texts[order] == gen.generate(["copy : 1 2 3"], DecodeOptions(
            mode="diffusion", max_new_tokens=8, seed=4, order=order, eos_stop=False,
            eos_penalty=1e9, chat=False))[0][0]
    assert texts["confidence"] != texts["left-to-right"]


def test_models_and_health(live):
    assert live.request("GET", "/health", key=None) == (200, {"status": "ok", "model": NAME})
    models = live.client().models.list()
    assert [m.id for m in models.data] == [NAME]


# ---- batching --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_does_not_depend_on_who_else_is_served(live, mode):
    client = live.client()
    prompts = ["copy : 1 2 3", "sort : 9 8 7", "reverse : 4 5 6", "copy : 7 7 1"] * 2
    extra = {"mode": mode, "temperature": 1.0}

    def ask(i: int) -> str:
        return client.completions.create(model=NAME, prompt=prompts[i], max_tokens=8,
                                         extra_body={**extra, "seed": i}).choices[0].text

    alone = [ask(i) for i in range(len(prompts))]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(len(prompts))))
    assert together == alone
    assert len(set(alone)) > 1  # seeds and prompts matter: the check can fail


def test_the_batcher_groups_waiting_jobs_and_keeps_each_answer(gen):
    batcher = Batcher(gen, max_batch=3, batch_wait=0.3)
    try:
        def job(prompt, seed, mode="diffusion"):
            return Job(gen.encode_prompt(prompt, False),
                       DecodeOptions(mode=mode, seed=seed, temperature=1.0, max_new_tokens=6,
                                     strategy="sample"))
        jobs = [job("copy : 1 2 3", 0), job("sort : 3 2 1", 1), job("copy : 1 2", 2),
                job("copy : 5 5 5", 3), job("copy : 1 2 3", 4, "ar"), job("copy : 9 9 9", 5)]
        futures = [batcher.submit(j) for j in jobs]
        results = [f.result(timeout=60) for f in futures]
        # same-length diffusion jobs share passes (at most 3), the others wait for their own group
        assert batcher.groups == [3, 1, 1, 1]
        for j, res in zip(jobs, results, strict=True):
            assert res.completions == gen.generate_ids([j.ids], j.opts)[0]
    finally:
        batcher.close()


def test_the_queue_limit_is_enforced(gen):
    batcher = Batcher(gen, max_queue=1, batch_wait=1.0)
    try:
        opts = DecodeOptions(mode="ar", max_new_tokens=2)
        first = batcher.submit(Job([1, 5], opts))
        with pytest.raises(QueueFull):
            batcher.submit(Job([1, 6], opts))
        assert first.result(timeout=30).completions
    finally:
        batcher.close()


# ---- the step stream ---------------------------------------------------------------------------


def test_step_stream_replays_every_diffusion_step(live):
    body = {"prompt": "copy : 1 2 3", "mode": "diffusion", "steps": 4, "candidates": 2,
            "max_tokens": 8, "seed": 5}
    status, text = live.request("POST", "/v1/steps", body)
    assert status == 200
    events = [json.loads(e) for e in _events(text)]
    assert [e["type"] for e in events] == ["start", "step", "step", "step", "step", "done"]
    assert events[0]["canvas"] == [[None] * 8] * 2  # all masked
    steps = events[1:-1]
    assert all(None not in row for row in steps[-1]["canvas"])
    for row in range(2):
        assert sorted(j for e in steps for j in e["changed"][row]) == list(range(8))
    done = events[-1]
    _, whole = live.request("POST", "/v1/completions", {"model": NAME, **body})
    assert done["text"] == whole["choices"][0]["text"] and done["steps"] == 4
    assert "".join(steps[-1]["canvas"][done["row"]]).startswith(done["text"].replace(" ", "")[:1])


def test_step_stream_of_ar_adds_one_token_per_step(live):
    status, text = live.request("POST", "/v1/steps", {"prompt": "copy : 1 2 3", "mode": "ar",
                                                       "max_tokens": 5})
    events = [json.loads(e) for e in _events(text)]
    steps = [e for e in events if e["type"] == "step"]
    assert status == 200 and 1 <= len(steps) <= 5
    assert [e["changed"] for e in steps] == [[[s]] for s in range(len(steps))]
    assert events[-1]["type"] == "done" and events[-1]["steps"] == len(steps)


def test_a_client_that_leaves_mid_stream_stops_its_work(live):
    batcher = live.app.state.batcher
    before = batcher.abandoned
    body = json.dumps({"prompt": "copy : 1 2 3", "mode": "diffusion", "steps": 1000, "candidates": 8,
                       "max_tokens": 64}).encode()
    req = urllib.request.Request(live.url + "/v1/steps", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {KEY}"})
    resp = urllib.request.urlopen(req, timeout=60)
    while b'"type": "step"' not in resp.readline():
        pass
    resp.close()
    deadline = time.monotonic() + 20
    while batcher.abandoned == before:
        assert time.monotonic() < deadline, "the decoding went on after the client left"
        time.sleep(0.05)
    assert live.request("GET", "/health", key=None)[0] == 200


# ---- stop sequences and log-probabilities ---------------------------------------------------------


def _stop_inside(text: str) -> str:
    """A stop sequence that first occurs in the middle of ``text``."""
    words = text.split(" ")
    assert len(words) >= 4, f"the completion is too short to test a stop sequence: {text!r}"
    stop = " " + words[len(words) // 2]
    assert text.find(stop) > 0
    return stop


@pytest.mark.parametrize("mode", MODES)
def test_stop_sequences_cut_the_text_and_end_ar_decoding_early(live, mode):
    client = live.client()
    extra = {"mode": mode, "seed": 2, "steps": 8}
    if mode == "diffusion":  # no end tokens: a full canvas of words
        extra.update(eos_stop=False, eos_penalty=1e9)
    full = client.completions.create(model=NAME, prompt="copy : 1 2 3", max_tokens=12, extra_body=extra)
    stop = _stop_inside(full.choices[0].text)
    cut = client.completions.create(model=NAME, prompt="copy : 1 2 3", max_tokens=12,
                                    stop=[stop, "never-there"], extra_body=extra)
    expected = full.choices[0].text[:full.choices[0].text.find(stop)]
    assert cut.choices[0].text == expected and cut.choices[0].finish_reason == "stop"
    if mode == "ar":  # AR stops decoding at the stop sequence; diffusion decodes the canvas whole
        assert cut.usage.completion_tokens < full.usage.completion_tokens
    streamed = list(client.completions.create(model=NAME, prompt="copy : 1 2 3", max_tokens=12,
                                              stop=stop, stream=True, extra_body=extra))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "stop"


def test_ar_logprobs_are_the_models_own(live, gen):
    client = live.client()
    done = client.completions.create(model=NAME, prompt="copy : 1 2 3", max_tokens=6, logprobs=3,
                                     extra_body={"mode": "ar"})
    lp = done.choices[0].logprobs
    assert "".join(lp.tokens) == done.choices[0].text
    assert len(lp.tokens) == done.usage.completion_tokens == len(lp.token_logprobs)
    for chosen, top, offset, piece in zip(lp.token_logprobs, lp.top_logprobs, lp.text_offset,
                                          lp.tokens, strict=True):
        assert len(top) == 3 and chosen <= 0
        assert chosen == pytest.approx(max(top.values()), abs=1e-5)  # greedy takes the top token
        assert done.choices[0].text[offset:].startswith(piece)
    ids = gen.encode_prompt("copy : 1 2 3", False)
    answer = gen.generate_ids([ids], DecodeOptions(mode="ar", max_new_tokens=6, chat=False))[0][0]
    layout = gen.ar_config(DecodeOptions(mode="ar", chat=False)).layout
    (expected, greedy), = ar_log_likelihoods(gen.backbone, [(ids, answer)], layout)
    assert sum(lp.token_logprobs) == pytest.approx(expected, abs=1e-4) and greedy

    chat = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "sort : 2 1"}],
                                          max_tokens=5, logprobs=True, top_logprobs=2,
                                          extra_body={"mode": "ar"})
    content = chat.choices[0].logprobs.content
    status, plain = live.request("POST", "/v1/chat/completions", {
        "model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
        "logprobs": None, "mode": "ar"})
    assert status == 200 and plain["choices"][0]["logprobs"] is None
    assert "".join(c.token for c in content) == chat.choices[0].message.content
    assert all(len(c.top_logprobs) == 2 and c.logprob <= 0 for c in content)


def test_diffusion_logprobs_are_the_samplers_draws(live):
    status, reply = live.request("POST", "/v1/completions", {
        "model": NAME, "prompt": "copy : 1 2", "max_tokens": 8, "mode": "diffusion", "logprobs": 0,
        "eos_stop": False, "eos_penalty": 1e9})
    assert status == 200
    lp = reply["choices"][0]["logprobs"]
    assert "".join(lp["tokens"]) == reply["choices"][0]["text"]
    assert len(lp["token_logprobs"]) == reply["usage"]["completion_tokens"] > 0
    assert all(v <= 0 for v in lp["token_logprobs"])
    assert [list(top.values()) for top in lp["top_logprobs"]] == [[v] for v in lp["token_logprobs"]]
    status, reply = live.request("POST", "/v1/completions", {
        "model": NAME, "prompt": "copy : 1 2", "mode": "diffusion", "logprobs": 2})
    assert status == 400 and reply["error"]["param"] == "logprobs"


# ---- bad requests ------------------------------------------------------------------------------


BAD = [
    ("malformed JSON", "POST", "/v1/completions", b'{"model": "tiny", "prompt": ', KEY, 400),
    ("body not an object", "POST", "/v1/completions", b'[1, 2]', KEY, 400),
    ("missing model", "POST", "/v1/completions", {"prompt": "copy : 1"}, KEY, 400),
    ("missing prompt", "POST", "/v1/completions", {"model": NAME}, KEY, 400),
    ("prompt wrongly typed", "POST", "/v1/completions", {"model": NAME, "prompt": 7}, KEY, 400),
    ("empty prompt", "POST", "/v1/completions", {"model": NAME, "prompt": "  "}, KEY, 400),
    ("max_tokens a string", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "max_tokens": "5"}, KEY, 400),
    ("max_tokens over the limit", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "max_tokens": 65}, KEY, 400),
    ("max_tokens zero", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "max_tokens": 0}, KEY, 400),
    ("unknown model", "POST", "/v1/completions", {"model": "gpt-9", "prompt": "copy : 1"}, KEY, 404),
    ("prompt longer than the context", "POST", "/v1/completions",
     {"model": NAME, "prompt": "1 " * 300}, KEY, 400),
    ("prompt and output over the context", "POST", "/v1/completions",
     {"model": NAME, "prompt": "1 " * 230, "max_tokens": 40, "mode": "ar"}, KEY, 400),
    ("negative steps", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "steps": -1}, KEY, 400),
    ("absurd steps", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "steps": 10**9}, KEY, 400),
    ("negative temperature", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "temperature": -0.5}, KEY, 400),
    ("absurd temperature", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "temperature": 1e9}, KEY, 400),
    ("unknown mode", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "mode": "sideways"}, KEY, 400),
    ("zero candidates", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "candidates": 0}, KEY, 400),
    ("negative seed", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "seed": -3}, KEY, 400),
    ("negative block_length", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "block_length": -2}, KEY, 400),
    ("too many completions", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "n": 1000}, KEY, 400),
    ("threshold of 1", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "threshold": 1.0}, KEY, 400),
    ("threshold and factor", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "threshold": 0.9, "factor": 1.0}, KEY, 400),
    ("unknown confidence", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "confidence": "vibes"}, KEY, 400),
    ("unknown order", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "order": "right-to-left"}, KEY, 400),
    ("no messages", "POST", "/v1/chat/completions", {"model": NAME, "messages": []}, KEY, 400),
    ("unknown role", "POST", "/v1/chat/completions",
     {"model": NAME, "messages": [{"role": "wizard", "content": "hi"}]}, KEY, 400),
    ("message without content", "POST", "/v1/chat/completions",
     {"model": NAME, "messages": [{"role": "user"}]}, KEY, 400),
    ("wrong API key", "POST", "/v1/completions", {"model": NAME, "prompt": "copy : 1"}, "nope", 401),
    ("missing API key", "GET", "/v1/models", None, None, 401),
    ("unknown route", "GET", "/v1/engines", None, KEY, 404),
    ("wrong method", "GET", "/v1/completions", None, KEY, 405),
    ("steps stream, bad steps", "POST", "/v1/steps", {"prompt": "copy : 1", "steps": 0}, KEY, 400),
    ("five stop sequences", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "stop": ["a", "b", "c", "d", "e"]}, KEY, 400),
    ("empty stop sequence", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "stop": ""}, KEY, 400),
    ("stop wrongly typed", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "stop": 7}, KEY, 400),
    ("logprobs over 5", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "logprobs": 6, "mode": "ar"}, KEY, 400),
    ("logprobs while streaming", "POST", "/v1/completions",
     {"model": NAME, "prompt": "copy : 1", "logprobs": 1, "mode": "ar", "stream": True}, KEY, 400),
    ("steps stream with a stop sequence", "POST", "/v1/steps", {"prompt": "copy : 1", "stop": "x"},
     KEY, 400),
    ("top_logprobs without logprobs", "POST", "/v1/chat/completions",
     {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, KEY, 400),
]


def test_bad_requests_get_openai_errors_and_the_server_stays_healthy(live):
    assert len(BAD) >= 15
    for what, method, path, body, key, expected in BAD:
        status, reply = live.request(method, path, body, key=key)
        assert status == expected, f"{what}: {status} {reply}"
        assert isinstance(reply, dict) and reply["error"]["message"], what
        assert reply["error"]["type"], what
    assert live.request("GET", "/health", key=None)[0] == 200
    ok, reply = live.request("POST", "/v1/completions", {"model": NAME, "prompt": "copy : 1"})
    assert ok == 200 and reply["choices"]
    with pytest.raises(openai.AuthenticationError):
        live.client("wrong").models.list()


def test_queue_limit_and_time_limit_over_http(gen):
    settings = ServeSettings(model_name=NAME, max_queue=1, timeout=1.0)
    app = create_app(gen, settings)
    app.state.batcher.batch_wait = 3.0  # the worker waits: the first request holds the queue
    with LiveServer(app) as server:
        body = {"model": NAME, "prompt": "copy : 1", "mode": "ar", "max_tokens": 2}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(server.request, "POST", "/v1/completions", body, None)
            time.sleep(0.3)
            status, reply = server.request("POST", "/v1/completions", body, key=None)
            assert status == 429 and reply["error"]["type"] == "rate_limit_error"
            status, reply = first.result()
        assert status == 408 and reply["error"]["code"] == "timeout"
        assert server.request("GET", "/health", key=None)[0] == 200


# ---- the page --------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine")
def test_the_page_shows_every_diffusion_step(live, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(live.url + "/")
            page.fill("#prompt", "copy : 4 5 6")
            page.select_option("#mode", "diffusion")
            page.fill("#steps", "4")
            page.fill("#candidates", "2")
            page.fill("#max_tokens", "8")
            page.fill("#key", KEY)
            page.click("#run")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('done')",
                                   timeout=30000)
            assert page.get_attribute("#canvas", "data-steps") == "4"
            assert page.get_attribute("#slider", "max") == "4"
            assert page.locator("#canvas .row").count() == 2
            assert page.locator("#canvas .row.best").count() == 1
            assert page.locator("#canvas .tok.masked").count() == 0
            page.fill("#slider", "0")  # replay: back to the all-masked canvas
            assert page.locator("#canvas .tok.masked").count() == 16
            _, whole = live.request("POST", "/v1/completions", {
                "model": NAME, "prompt": "copy : 4 5 6", "mode": "diffusion", "steps": 4,
                "candidates": 2, "max_tokens": 8, "temperature": 0.2, "seed": 0})
            assert page.text_content("#final") == whole["choices"][0]["text"]
            page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()


# ---- the real model (slow) -----------------------------------------------------------------------


@pytest.mark.slow
def test_openai_client_on_smollm2_in_both_modes():
    from ar2diff.models.hub import ModelDownloadError

    try:
        smollm2 = TextGenerator.load("smollm2-135m", device="cpu")
    except ModelDownloadError as err:
        pytest.skip(f"smollm2-135m is not cached and could not be fetched: {err}")
    settings = ServeSettings(model_name="smollm2-135m", timeout=600)
    with LiveServer(create_app(smollm2, settings)) as server:
        client = server.client(timeout=600)
        question = [{"role": "user", "content": "What is the capital of France?"}]
        ar = client.chat.completions.create(model="smollm2-135m", messages=question, max_tokens=16,
                                            extra_body={"mode": "ar"})
        assert "Paris" in ar.choices[0].message.content
        for mode in MODES:
            extra = {"mode": mode, "steps": 4, "candidates": 2, "seed": 1}
            done = client.completions.create(model="smollm2-135m", prompt="The capital of France is",
                                             max_tokens=8, extra_body=extra)
            assert done.usage.completion_tokens > 0 and done.choices[0].text
            chat = client.chat.completions.create(model="smollm2-135m", messages=question,
                                                  max_tokens=8, extra_body=extra)
            chunks = list(client.chat.completions.create(model="smollm2-135m", messages=question,
                                                         max_tokens=8, stream=True, extra_body=extra))
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert streamed == chat.choices[0].message.content and chunks[-1].usage.total_tokens > 0
