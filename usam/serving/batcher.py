"""Request batching: requests that arrive together and share sampling settings run as one generation.

One worker thread owns the model. It takes the oldest queued request, then waits up to `window_ms` for more
requests with the same batch key (greedy requests all share one key; sampled ones share it when temperature and
top_p match; a seeded sampled request runs alone, so that its seed gives the same answer whatever else arrives),
up to `max_batch`. The batch is generated with `model.generate` (left-padded prompts, KV cache).

Each row stops on its own: a StoppingCriteria (called once per decoding step with the new token of every row,
before the step's stop decision) follows each row's end of turn, stop strings and max_tokens, and hands the
row's new text to its request (streaming). A transformers streamer is no use here: it is called after the stop
decision and TextStreamer takes one row only.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import StoppingCriteria

from usam.serving.errors import Overloaded

log = logging.getLogger("usam.serving")


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class GenerationRequest:
    conversation: list[dict]  # USAMProcessor chat format, audio as float32 arrays at the model's input rate
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    on_delta: Callable[[str], None] | None = None  # called from the worker thread with each new piece of text
    on_done: Callable[[Generation | BaseException], None] | None = None  # called once, from the worker thread
    cancelled: threading.Event = field(default_factory=threading.Event)
    emitted: bool = False  # some text was handed to on_delta already
    finished: bool = False  # on_done was called

    def batch_key(self):
        if self.temperature <= 0:
            return ("greedy",)
        if self.seed is not None:
            return ("seeded", id(self))
        return ("sample", self.temperature, self.top_p)

    def _done(self, result) -> None:
        if self.finished:
            return
        self.finished = True
        if self.on_done is not None:
            try:
                self.on_done(result)
            except Exception:  # a closed client connection must not stop the worker
                log.exception("on_done callback failed")


class _RowTracker:
    """One row of a running batch: its tokens, its text so far, and why (if) it has finished."""

    def __init__(self, request: GenerationRequest, tokenizer, eos_ids: set[int], prompt_tokens: int):
        self.request, self.tokenizer, self.eos_ids = request, tokenizer, eos_ids
        self.prompt_tokens = prompt_tokens
        self.tokens: list[int] = []
        self.text = ""
        self.sent = 0  # characters of self.text handed to on_delta
        self.finish_reason: str | None = None

    def step(self, token: int) -> bool:
        """Take this step's token; True when the row is finished."""
        if self.finish_reason is not None:
            return True
        if self.request.cancelled.is_set():
            self.finish_reason = "stop"
            return True
        if token in self.eos_ids:
            self.finish_reason = "stop"
            self._send(len(self.text))
            return True
        self.tokens.append(token)
        self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        cut = min((i for i in (self.text.find(s) for s in self.request.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.finish_reason = self.text[:cut], "stop"
        elif len(self.tokens) >= self.request.max_tokens:
            self.finish_reason = "length"
        if self.finish_reason is not None:
            self._send(len(self.text))
            return True
        self._send(self._safe_end())
        return False

    def _safe_end(self) -> int:
        """How much text can be sent now: not a trailing incomplete UTF-8 character (U+FFFD until its bytes
        arrive), nor a tail that could be the start of a stop string."""
        end = len(self.text)
        while end > self.sent and self.text[end - 1] == "\ufffd":
            end -= 1
        held = 0  # the longest tail of the text that is a proper prefix of a stop string
        for stop in self.request.stop:
            for k in range(min(len(stop) - 1, end), held, -1):
                if self.text[end - k:end] == stop[:k]:
                    held = k
                    break
        end -= held
        return max(end, self.sent)

    def _send(self, end: int) -> None:
        if end > self.sent and self.request.on_delta is not None:
            piece = self.text[self.sent:end]
            self.sent = end
            self.request.emitted = True
            try:
                self.request.on_delta(piece)
            except Exception:
                log.exception("on_delta callback failed")
                self.request.cancelled.set()

    def result(self) -> Generation:
        if self.finish_reason is None:
            self.finish_reason = "length"
            self._send(len(self.text))
        return Generation(self.text, self.finish_reason, self.prompt_tokens, len(self.tokens))


class _RowStopper(StoppingCriteria):
    def __init__(self, rows: list[_RowTracker]):
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores, **_) -> torch.Tensor:
        # input_ids (B, T_new): generate() starts from embeddings, so it holds only the new tokens
        last = input_ids[:, -1].tolist()
        done = [row.step(token) for row, token in zip(self.rows, last)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class Batcher:
    def __init__(self, model, processor, max_batch: int = 8, window_ms: float = 10.0, max_queue: int = 64):
        if max_batch < 1 or max_queue < 1 or window_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and window_ms >= 0")
        self.model, self.processor = model.eval(), processor
        self.max_batch, self.window, self.max_queue = max_batch, window_ms / 1000.0, max_queue
        tokenizer = processor.tokenizer
        self.eos_ids = {tokenizer.eos_token_id}
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if im_end not in (None, tokenizer.unk_token_id):
            self.eos_ids.add(im_end)
        self._queue: collections.deque[GenerationRequest] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # generations run
        self.requests = 0  # requests answered (or failed) by them

    # -- queue ----------------------------------------------------------------------------------------------
    def start(self) -> "Batcher":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="usam-batcher", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float | None = 30.0) -> None:
        with self._cond:
            self._closed = True
            pending, self._queue = list(self._queue), collections.deque()
            self._cond.notify_all()
        for request in pending:
            request._done(RuntimeError("the server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, request: GenerationRequest) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if len(self._queue) >= self.max_queue:
                raise Overloaded(f"{len(self._queue)} requests are already waiting (--max-queue {self.max_queue})")
            self._queue.append(request)
            self._cond.notify_all()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _take_matching(self, batch: list[GenerationRequest], key) -> None:
        """Move queued requests with this batch key into the batch, keeping the others in order."""
        keep = collections.deque()
        while self._queue:
            request = self._queue.popleft()
            if len(batch) < self.max_batch and request.batch_key() == key:
                batch.append(request)
            else:
                keep.append(request)
        self._queue = keep

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = [self._queue.popleft()]
                key = batch[0].batch_key()
                deadline = time.monotonic() + self.window
                while len(batch) < self.max_batch:
                    self._take_matching(batch, key)
                    remaining = deadline - time.monotonic()
                    if len(batch) >= self.max_batch or remaining <= 0 or self._closed:
                        break
                    self._cond.wait(remaining)
            try:
                self._run(batch)
            except Exception as err:  # keep serving: whatever went wrong belongs to this batch only
                log.exception("batch failed")
                for request in batch:
                    request._done(err)  # (no-op for those already answered)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- generation -----------------------------------------------------------------------------------------
    def _run(self, batch: list[GenerationRequest]) -> None:
        for request in batch:
            if request.cancelled.is_set():
                request._done(RuntimeError("cancelled"))
        batch = [r for r in batch if not r.cancelled.is_set()]
        if not batch:
            return
        try:
            self._generate(batch)
        except Exception as err:  # one bad request must not fail the others: retry them one by one
            if len(batch) == 1:
                log.exception("generation failed")
                batch[0]._done(err)
                return
            log.warning("batched generation of %d requests failed (%s); running them one by one", len(batch), err)
            for request in batch:
                if request.emitted:  # its client has part of an answer already: it cannot be restarted
                    request._done(err)
                    continue
                try:
                    self._generate([request])
                except Exception as single_err:
                    log.exception("generation failed")
                    request._done(single_err)

    def _generate(self, batch: list[GenerationRequest]) -> None:
        first = batch[0]
        inputs = self.processor.apply_chat([r.conversation for r in batch], add_generation_prompt=True)
        inputs = inputs.to(self.model.device)
        prompt_tokens = inputs["attention_mask"].sum(1).tolist()
        rows = [_RowTracker(r, self.processor.tokenizer, self.eos_ids, int(n)) for r, n in zip(batch, prompt_tokens)]
        kwargs = {"do_sample": first.temperature > 0}
        if first.temperature > 0:
            kwargs.update(temperature=first.temperature, top_p=first.top_p)
            if first.seed is not None:
                torch.manual_seed(first.seed)
        with torch.inference_mode():
            self.model.generate(**inputs, max_new_tokens=max(r.max_tokens for r in batch),
                                stopping_criteria=[_RowStopper(rows)], **kwargs)
        self.batches += 1
        self.requests += len(batch)
        for row in rows:
            row.request._done(row.result())
