"""The request batcher in process (rows stop on their own, a bad request does not fail its batch, cancelling),
and the overload answer of a server with a tiny queue (uvicorn in a thread on 127.0.0.1)."""
from __future__ import annotations

import base64
import queue
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from usam.serving.batcher import Batcher, Generation, GenerationRequest
from usam.serving.testing import encode, serve_in_thread, tone


@pytest.fixture(scope="module")
def model_and_processor(loaded):
    return loaded


def conversation(wave, text):
    return [{"role": "user", "content": [{"type": "audio", "audio": wave}, {"type": "text", "text": text}]}]


def solo(model, processor, conv, max_tokens):
    ids = model.generate(**processor.apply_chat([conv]), max_new_tokens=max_tokens, do_sample=False)
    return processor.batch_decode(ids)[0]


def run_together(batcher, requests, timeout=60):
    """Submit all, wait for every on_done; -> results in order."""
    done = queue.Queue()
    for i, r in enumerate(requests):
        r.on_done = lambda result, i=i: done.put((i, result))
    for r in requests:
        batcher.submit(r)
    results = [None] * len(requests)
    for _ in requests:
        i, result = done.get(timeout=timeout)
        results[i] = result
    return results


def test_rows_stop_on_their_own_and_a_bad_request_fails_alone(model_and_processor):
    model, processor = model_and_processor
    convs = [conversation(tone(0.5 + 0.4 * i, 250 * (i + 1), seed=i), f"Question {i}?") for i in range(3)]
    limits = [5, 14, 9]
    expected = [solo(model, processor, c, n) for c, n in zip(convs, limits)]
    broken = [{"role": "user", "content": [{"type": "audio", "audio": tone(1.0)[None, None]},  # 3-D: not a clip
                                           {"type": "text", "text": "?"}]}]
    batcher = Batcher(model, processor, max_batch=8, window_ms=500).start()
    try:
        requests = [GenerationRequest(convs[0], limits[0]), GenerationRequest(broken, 8),
                    GenerationRequest(convs[1], limits[1]), GenerationRequest(convs[2], limits[2])]
        results = run_together(batcher, requests)
    finally:
        batcher.close()
    assert isinstance(results[1], ValueError)
    good = [results[0], results[2], results[3]]
    assert all(isinstance(r, Generation) for r in good)
    assert [r.text.strip() for r in good] == expected
    for r, n in zip(good, limits):
        assert r.completion_tokens <= n and (r.finish_reason == "length") == (r.completion_tokens == n)


def test_batched_rows_equal_solo_rows_and_cancel_stops_one_row(model_and_processor):
    model, processor = model_and_processor
    convs = [conversation(tone(1.0, 330), "What?"), conversation(tone(0.6, 700, seed=3), "Which instrument?")]
    expected = solo(model, processor, convs[1], 16)
    pieces = []
    cancelled = GenerationRequest(convs[0], 16)

    def stop_after_first_piece(text):  # like a streaming client that disconnects after one piece
        pieces.append(text)
        cancelled.cancelled.set()

    cancelled.on_delta = stop_after_first_piece
    batcher = Batcher(model, processor, max_batch=2, window_ms=500).start()
    try:
        results = run_together(batcher, [cancelled, GenerationRequest(convs[1], 16)])
    finally:
        batcher.close()
    assert batcher.batches == 1 and batcher.requests == 2
    assert len(pieces) == 1 and results[0].completion_tokens <= 2
    assert results[1].text.strip() == expected


def test_sampling_settings_split_batches(model_and_processor):
    model, processor = model_and_processor
    conv = conversation(tone(0.5), "Hi")
    batcher = Batcher(model, processor, max_batch=8, window_ms=300).start()
    try:
        requests = [GenerationRequest(conv, 4), GenerationRequest(conv, 4, temperature=0.7),
                    GenerationRequest(conv, 4), GenerationRequest(conv, 4, temperature=0.7, seed=1),
                    GenerationRequest(conv, 4, temperature=0.7, seed=1)]
        results = run_together(batcher, requests)
    finally:
        batcher.close()
    assert all(isinstance(r, Generation) for r in results)
    # greedy pair together; the unseeded sample alone; each seeded request alone (same seed -> same text)
    assert batcher.batches == 4
    assert results[0].text == results[2].text and results[3].text == results[4].text


@pytest.fixture()
def small_queue_server(model_and_processor):
    from usam.serving.app import ServeSettings, create_app

    model, processor = model_and_processor
    settings = ServeSettings(model_name="tiny", max_batch=1, batch_window_ms=0, max_queue=1)
    with serve_in_thread(create_app(model, processor, settings), timeout=30) as url:
        yield url


def test_full_queue_answers_503_and_the_server_recovers(small_queue_server):
    audio = base64.b64encode(encode(tone(1.0))).decode()
    payload = {"model": "tiny", "max_tokens": 48, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}, {"type": "text", "text": "Hi"}]}]}

    def send(_):
        return httpx.post(f"{small_queue_server}/v1/chat/completions", json=payload, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503}, codes
    assert codes.count(200) >= 2
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.json()["error"]["code"] == "queue_full" and busy.headers["retry-after"] == "1"
    answers = {r.json()["choices"][0]["message"]["content"] for r in responses if r.status_code == 200}
    assert len(answers) == 1  # the same greedy answer for every accepted request
    time.sleep(0.5)
    assert httpx.get(f"{small_queue_server}/health", timeout=10).json()["queued"] == 0
    assert send(0).status_code == 200
