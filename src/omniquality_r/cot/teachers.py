"""Teachers: whatever writes `<plan>..</plan><think>..</think><answer>s.ss</answer>` trajectories.

One interface (`Teacher.sample`: k trajectories per item) and three implementations:
  hf       a local or hub VLM through transformers generate, via the shared inference path
           (inference.py), k samples per prompt as `num_return_sequences`;
  openai   an OpenAI-compatible chat-completions endpoint (this module, `OpenAITeacher`);
  analyst  measured image properties, no network (analyst.py).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from ..inference import PromptSpec, decode, encode_prompts, generate
from ..prompts import build_messages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherItem:
    """One image to judge; `key` (the record id) identifies it for seeding."""

    image: Image.Image
    task: str
    prompt: str = ""
    key: str = ""


class Teacher(Protocol):
    name: str

    def sample(self, items: list[TeacherItem], k: int, seed: int) -> list[list[str]]:
        """k trajectory texts per item, in item order."""
        ...


class TeacherError(RuntimeError):
    """The teacher could not produce trajectories (e.g. the endpoint kept failing)."""


class HFTeacher:
    """A transformers VLM sampling k completions per prompt in one batched generate call."""

    name = "hf"

    def __init__(self, model, processor, *, system_prompt: str, instructions: dict[str, str],
                 generation: dict):  # fmt: skip
        self.model, self.processor = model.eval(), processor
        self.system_prompt, self.instructions = system_prompt, instructions
        self.generation = generation

    def sample(self, items: list[TeacherItem], k: int, seed: int) -> list[list[str]]:
        torch.manual_seed(seed)
        specs = [PromptSpec(it.image, it.task, it.prompt) for it in items]
        inputs = encode_prompts(self.processor, specs, self.instructions, self.system_prompt)
        ids = generate(self.model, self.processor, inputs,
                       {**self.generation, "num_return_sequences": k})  # fmt: skip
        texts = decode(self.processor, ids)  # generate repeats each prompt k times in a row
        return [texts[i * k : (i + 1) * k] for i in range(len(items))]


def data_url(image: Image.Image) -> str:
    """The image as a base64 PNG data URL (lossless, so compression artefacts are the image's)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class RateLimiter:
    """At most `per_s` starts per second across threads (<= 0: unlimited)."""

    def __init__(self, per_s: float):
        self.interval = 1.0 / per_s if per_s > 0 else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        time.sleep(max(0.0, start - now))


class ResponseCache:
    """Append-only JSONL of {"key", "text"}; a torn last line (interrupted run) is ignored."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.texts: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.texts[row["key"]] = row["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    log.warning("ignoring a damaged line in %s", self.path)

    def get(self, key: str) -> str | None:
        return self.texts.get(key)

    def put(self, pairs: list[tuple[str, str]]) -> None:
        with self.lock, self.path.open("a") as f:
            for key, text in pairs:
                self.texts[key] = text
                f.write(json.dumps({"key": key, "text": text}) + "\n")


RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAITeacher:
    """Chat completions over HTTP (urllib): images inline as base64 data URLs; k samples per
    item as one request with `n` (or k requests); retries with exponential backoff (honouring
    Retry-After) on 408/409/429/5xx, connection errors and timeouts; a request-rate limit; a
    thread pool of `workers`; and a JSONL cache keyed by sha256 of (model, messages, sampling
    parameters, sample index), so a rerun or resumed run re-requests only what is missing."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        system_prompt: str,
        instructions: dict[str, str],
        generation: dict,
        cache_path: str | Path,
        api_key_env: str = "OPENAI_API_KEY",
        n_per_request: bool = True,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        requests_per_s: float = 2.0,
        workers: int = 4,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.system_prompt, self.instructions = model, system_prompt, instructions
        self.generation, self.n_per_request = generation, n_per_request
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s, self.workers = backoff_s, max_backoff_s, workers
        self.api_key = os.environ.get(api_key_env, "")
        if not self.api_key:
            log.warning("$%s is not set; sending requests without an API key", api_key_env)
        self.limiter = RateLimiter(requests_per_s)
        self.cache = ResponseCache(cache_path)
        self.requests_sent, self.lock = 0, threading.Lock()

    def messages(self, item: TeacherItem) -> list[dict]:
        messages = build_messages(item.task, self.instructions, self.system_prompt, item.prompt)
        image = {"type": "image_url", "image_url": {"url": data_url(item.image)}}
        messages[1]["content"][0] = image
        return messages

    def cache_key(self, messages: list[dict], index: int) -> str:
        blob = json.dumps([self.model, messages, self.generation, index], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def post(self, body: dict) -> dict:
        """POST with retries (class docstring); raises TeacherError when they run out."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            self.limiter.wait()
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            with self.lock:
                self.requests_sent += 1
            retry_after = 0.0
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                detail = f"HTTP {e.code}: {e.read()[:500].decode(errors='replace')}"
                if e.code not in RETRY_STATUS:
                    raise TeacherError(f"{self.url}: {detail}") from None
                retry_after = float(e.headers.get("Retry-After", 0) or 0)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                detail = f"{type(e).__name__}: {e}"
            if attempt == self.max_retries:
                break
            delay = min(self.max_backoff_s, max(retry_after, self.backoff_s * 2**attempt))
            log.warning("%s failed (%s); retry %d in %.1fs", self.url, detail, attempt + 1, delay)
            time.sleep(delay)
        raise TeacherError(f"{self.url}: gave up after {self.max_retries + 1} tries ({detail})")

    def _texts(self, messages: list[dict], n: int) -> list[str]:
        body = {"model": self.model, "messages": messages, **self.generation, "n": n}
        choices = self.post(body).get("choices") or []
        if len(choices) != n:
            raise TeacherError(f"{self.url}: asked for {n} choices, got {len(choices)}")
        return [c.get("message", {}).get("content") or "" for c in choices]

    def _sample_one(self, item: TeacherItem, k: int) -> list[str]:
        messages = self.messages(item)
        keys = [self.cache_key(messages, i) for i in range(k)]
        missing = [key for key in keys if self.cache.get(key) is None]
        if missing:
            if self.n_per_request:
                texts = self._texts(messages, len(missing))
            else:
                texts = [self._texts(messages, 1)[0] for _ in missing]
            self.cache.put(list(zip(missing, texts)))
        return [self.cache.get(key) for key in keys]

    def sample(self, items: list[TeacherItem], k: int, seed: int) -> list[list[str]]:
        """k completions per item; `seed` is unused (the cache key fixes each sample)."""
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            return list(pool.map(lambda it: self._sample_one(it, k), items))
