"""The `openai` teacher against a real local HTTP server (`hf`: tests/e2e/test_cot_stage.py)."""

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from omniquality_r.cot.teachers import OpenAITeacher, TeacherError, TeacherItem
from omniquality_r.prompts import parse_trajectory

INSTRUCTIONS = {"technical": "Rate it.", "alignment": 'Does it match "{prompt}"?'}


class Endpoint(ThreadingHTTPServer):
    """POST /v1/chat/completions: canned valid completions; `failures` holds the HTTP
    status (or "slow": answer after 0.5 s) of the next requests, consumed in order."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict] = []
        self.failures: list = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.requests.append({"path": self.path, "body": body,
                                    "auth": self.headers.get("Authorization")})  # fmt: skip
            failure = server.failures.pop(0) if server.failures else None
            index = len(server.requests)
        if failure == "slow":
            time.sleep(0.5)
        elif failure:
            return self.reply(failure, {"error": {"message": f"status {failure}"}})
        texts = [f"<plan>p</plan><think>request {index} sample {i}</think><answer>2.50</answer>"
                 for i in range(body.get("n", 1))]  # fmt: skip
        choices = [{"index": i, "message": {"role": "assistant", "content": t}}
                   for i, t in enumerate(texts)]  # fmt: skip
        return self.reply(200, {"id": "x", "object": "chat.completion", "choices": choices})


@pytest.fixture
def endpoint():
    server = Endpoint()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def items() -> list[TeacherItem]:
    return [TeacherItem(Image.new("RGB", (16, 12), (200, 30, 30)), "technical", "", "a"),
            TeacherItem(Image.new("RGB", (12, 16), (30, 30, 200)), "alignment", "one red circle "
                        "on the left", "b")]  # fmt: skip


def make(endpoint, tmp_path, **kw) -> OpenAITeacher:
    options = {"base_url": endpoint.base_url, "model": "judge-7b", "system_prompt": "Plan, think.",
               "instructions": INSTRUCTIONS, "generation": {"temperature": 1.0, "max_tokens": 64},
               "cache_path": tmp_path / "cache.jsonl", "api_key_env": "TEST_TEACHER_KEY",
               "backoff_s": 0.01, "requests_per_s": 0, "workers": 2, **kw}  # fmt: skip
    return OpenAITeacher(**options)


def test_samples_with_retry_base64_images_and_key(endpoint, items, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test")
    endpoint.failures = [429]
    out = make(endpoint, tmp_path).sample(items, k=3, seed=0)
    assert [len(texts) for texts in out] == [3, 3]
    assert all(parse_trajectory(t) is not None for texts in out for t in texts)
    assert len(endpoint.requests) == 3  # the 429, then one request per item with n = 3
    ok = endpoint.requests[1:]
    assert {r["path"] for r in ok} == {"/v1/chat/completions"}
    assert all(r["auth"] == "Bearer sk-test" and r["body"]["n"] == 3 for r in ok)
    assert all(r["body"]["model"] == "judge-7b" and r["body"]["max_tokens"] == 64 for r in ok)
    sizes = set()
    for r in ok:
        system, user = r["body"]["messages"]
        assert system["content"][0]["text"] == "Plan, think."
        image, text = user["content"]
        url = image["image_url"]["url"]
        assert image["type"] == "image_url" and url.startswith("data:image/png;base64,")
        sizes.add(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size)
        assert text["text"] in ("Rate it.", 'Does it match "one red circle on the left"?')
    assert sizes == {(16, 12), (12, 16)}


def test_cache_makes_a_rerun_free_and_resumes_missing_samples(endpoint, items, tmp_path):
    first = make(endpoint, tmp_path).sample(items, k=2, seed=0)
    assert len(endpoint.requests) == 2
    again = make(endpoint, tmp_path)
    assert again.sample(items, k=2, seed=0) == first and again.requests_sent == 0
    more = make(endpoint, tmp_path)
    extended = more.sample(items, k=3, seed=0)  # only sample index 2 is missing
    assert [texts[:2] for texts in extended] == first and more.requests_sent == 2
    assert [r["body"]["n"] for r in endpoint.requests[2:]] == [1, 1]


def test_torn_cache_line_is_ignored(endpoint, items, tmp_path):
    make(endpoint, tmp_path).sample(items[:1], k=1, seed=0)
    with (tmp_path / "cache.jsonl").open("a") as f:
        f.write('{"key": "abc", "te')  # an interrupted write
    teacher = make(endpoint, tmp_path)
    teacher.sample(items[:1], k=1, seed=0)
    assert teacher.requests_sent == 0


def test_k_requests_without_n(endpoint, items, tmp_path):
    make(endpoint, tmp_path, n_per_request=False).sample(items[:1], k=3, seed=0)
    assert [r["body"]["n"] for r in endpoint.requests] == [1, 1, 1]


def test_timeout_and_server_errors_are_retried(endpoint, items, tmp_path):
    endpoint.failures = ["slow", 503, 502]
    teacher = make(endpoint, tmp_path, timeout_s=0.2, workers=1)
    assert len(teacher.sample(items[:1], k=2, seed=0)[0]) == 2
    assert teacher.requests_sent == 4


@pytest.mark.parametrize(("failures", "tries"), [([400], 1), ([503] * 5, 3)])
def test_gives_up_on_client_errors_and_after_max_retries(endpoint, items, tmp_path, failures,
                                                         tries):  # fmt: skip
    endpoint.failures = failures
    teacher = make(endpoint, tmp_path, max_retries=2)
    with pytest.raises(TeacherError, match=str(failures[0])):
        teacher.sample(items[:1], k=1, seed=0)
    assert teacher.requests_sent == tries
    assert teacher.cache.texts == {}


def test_rate_limit_spaces_requests(endpoint, items, tmp_path):
    start = time.monotonic()
    make(endpoint, tmp_path, requests_per_s=10, n_per_request=False).sample(items, k=2, seed=0)
    assert time.monotonic() - start >= 0.3  # 4 requests, 0.1 s apart
