"""`usam serve` of a tiny model, started as a real subprocess on 127.0.0.1, driven with the official openai
client (and httpx for what the client cannot send): answers, multi-turn, streaming, batching, every error."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from usam.serving.testing import encode, free_port, tone, wait_http


KEY = "test-key-123"
MAX_SECONDS = 3.0


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", USAM_API_KEY=KEY)
    cmd = [sys.executable, "-m", "usam.cli", "serve", tiny_model_dir, "--host", "127.0.0.1", "--port", str(port),
           "--max-audio-seconds", str(MAX_SECONDS), "--max-body-mb", "1", "--batch-window-ms", "300",
           "--max-batch", "8", "--max-queue", "32", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=120, headers={"Authorization": f"Bearer {KEY}"}, proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The same model in this process, through USAMChat: what the server must answer (greedy)."""
    from usam.modeling import USAMModel
    from usam.processing import USAMProcessor

    return USAMModel.from_pretrained(tiny_model_dir).eval(), USAMProcessor.from_pretrained(tiny_model_dir)


MODEL = "usam-tiny"


def audio_part(wave, fmt="wav"):
    data = encode(wave, {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}[fmt])
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def user(wave, text, fmt="wav"):
    return {"role": "user", "content": [audio_part(wave, fmt), {"type": "text", "text": text}]}


def health(server):
    r = httpx.get(f"{server}/health", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    return r.json()


def post(server, payload=None, content=None, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if content is not None:
        return httpx.post(f"{server}/v1/chat/completions", content=content, headers=headers, timeout=60, **kw)
    return httpx.post(f"{server}/v1/chat/completions", json=payload, headers=headers, timeout=60, **kw)


def assert_error(response, status, code=None, contains=None):
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code is not None:
        assert err["code"] == code
    if contains is not None:
        assert contains in err["message"]
    return err


# -- answers ----------------------------------------------------------------------------------------------------
def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert health(server)["model"] == MODEL


def test_single_turn_matches_in_process_chat(client, reference):
    from usam.chat import USAMChat

    wave = tone(1.0, 440)
    r = client.chat.completions.create(model=MODEL, messages=[user(wave, "What is said?")], max_tokens=16,
                                       temperature=0)
    expected = USAMChat(*reference, max_new_tokens=16).ask(wave, "What is said?")
    assert r.choices[0].message.content.strip() == expected and expected
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    n_audio = reference[1].layout.num_audio_tokens(len(wave))
    assert r.usage.prompt_tokens > n_audio and 0 < r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_multi_turn_keeps_earlier_audio_and_answers(client, reference):
    from usam.chat import USAMChat

    from usam.chat import load_clip

    first, second = tone(1.0, 300, seed=1), tone(0.7, 900, seed=2)
    chat = USAMChat(*reference, max_new_tokens=12)
    a1 = chat.ask(first, "Describe the sound.")
    # the reference hears the second clip as the server will: through Ogg Vorbis, a lossy codec
    a2 = chat.ask(load_clip(encode(second, "OGG"), rate=chat.sampling_rate), "Is it the same as before?")
    messages = [user(first, "Describe the sound.", "flac"), {"role": "assistant", "content": a1},
                user(second, "Is it the same as before?", "ogg")]
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    assert r.choices[0].message.content.strip() == a2
    alone = client.chat.completions.create(model=MODEL, messages=messages[2:], max_tokens=12, temperature=0)
    assert alone.choices[0].message.content != r.choices[0].message.content  # the history changed the answer


def test_mp3_and_two_clips_in_one_message(client):
    clips = [tone(0.8, 350, seed=4), tone(0.6, 1000, seed=5)]
    content = [audio_part(clips[0], "mp3"), audio_part(clips[1], "wav"), {"type": "text", "text": "Compare."}]
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=8,
                                       temperature=0)
    one = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content[1:]}],
                                         max_tokens=8, temperature=0)
    assert r.choices[0].message.content and r.usage.prompt_tokens > one.usage.prompt_tokens


def test_streaming_equals_plain_answer(client):
    messages = [{"role": "system", "content": "You are helpful."}, user(tone(1.2, 500), "What is heard?")]
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3  # token by token, not one block
    assert "".join(pieces) == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_sse_wire_format_ends_with_done(server):
    payload = {"model": MODEL, "messages": [user(tone(0.5), "Hi")], "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=payload, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_stop_strings_and_max_tokens(client):
    messages = [user(tone(1.0, 440), "What is said?")]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
    text = full.choices[0].message.content
    assert len(text) >= 6
    stop = text[3:5]
    cut = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0,
                                              stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text[:text.index(stop)]
    short = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3, temperature=0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def test_seeded_sampling_repeats(client):
    messages = [user(tone(1.0, 440), "Say something.")]
    kw = dict(model=MODEL, messages=messages, max_tokens=16, temperature=1.2, top_p=0.95, seed=7)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_concurrent_requests_are_batched_and_equal_solo_answers(server, client):
    cases = [(tone(0.4 + 0.3 * i, 200 + 150 * i, seed=i), f"Question number {i}?") for i in range(6)]

    def ask(case, stream=False):
        wave, text = case
        kw = dict(model=MODEL, messages=[user(wave, text)], max_tokens=12, temperature=0)
        if stream:
            return "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(**kw, stream=True) if c.choices)
        return client.chat.completions.create(**kw).choices[0].message.content

    solo = [ask(c) for c in cases]
    assert len(set(solo)) > 1
    before = health(server)
    with ThreadPoolExecutor(len(cases)) as pool:
        together = list(pool.map(ask, cases, [i == 2 for i in range(len(cases))]))  # one of them streams
    after = health(server)
    assert together == solo
    assert after["requests"] - before["requests"] == len(cases)
    assert after["batches"] - before["batches"] < len(cases)  # at least two ran as one generation


# -- errors: each has an OpenAI error body and the server stays up -------------------------------------------------
def test_malformed_json_and_schema_errors(server):
    assert_error(post(server, content=b"{not json"), 400, "invalid_json")
    assert_error(post(server, content=b"[1, 2]"), 400, "invalid_json")
    err = assert_error(post(server, {"model": MODEL}), 400, "invalid_request", "messages")
    assert err["param"] == "messages"
    err = assert_error(post(server, {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                     "temperature": 9}), 400, "invalid_request")
    assert err["param"] == "temperature"
    assert_error(post(server, {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}), 400)
    assert_error(post(server, {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 2}), 400)
    assert_error(post(server, {"model": MODEL, "messages": [{"role": "assistant", "content": "x"}]}), 400)
    health(server)


def test_openai_client_raises_bad_request_for_bad_audio(server, client):
    bad = {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"this is not audio at all").decode(),
                                                   "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [bad]}], max_tokens=4)
    assert info.value.status_code == 400 and "not_audio" in info.value.message
    health(server)


def test_undecodable_and_truncated_audio(server):
    wav = encode(tone(1.0))
    for data, reason in [(wav[: len(wav) // 2], "truncated"), (b"RIFF" + b"\0" * 40, "not_audio"),
                         (encode(np.zeros(0, np.float32)), "zero_length")]:
        part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}
        err = assert_error(post(server, {"model": MODEL, "messages": [{"role": "user", "content": [part]}]}), 400,
                           "invalid_audio", reason)
        assert err["param"] == "messages[0].content[0]"
        health(server)
    bad_b64 = {"type": "input_audio", "input_audio": {"data": "%%%not base64%%%", "format": "wav"}}
    assert_error(post(server, {"model": MODEL, "messages": [{"role": "user", "content": [bad_b64]}]}), 400,
                 "invalid_audio")
    bad_format = audio_part(tone(0.5))
    bad_format["input_audio"]["format"] = "aac"
    assert_error(post(server, {"model": MODEL, "messages": [{"role": "user", "content": [bad_format]}]}), 400)
    health(server)


def test_urls_and_file_paths_are_refused(server, tmp_path):
    secret = tmp_path / "clip.wav"
    secret.write_bytes(encode(tone(0.5)))
    parts = [{"type": "audio_url", "audio_url": {"url": f"file://{secret}"}},
             {"type": "input_audio", "input_audio": {"url": "http://127.0.0.1:1/x.wav", "format": "wav"}},
             {"type": "input_audio", "input_audio": {"data": str(secret), "format": "wav"}},
             {"type": "file", "file": {"filename": str(secret)}}]
    for part in parts:
        assert_error(post(server, {"model": MODEL, "messages": [{"role": "user", "content": [part]}]}), 400)
    health(server)


def test_too_long_audio_and_too_large_body(server):
    long = user(tone(MAX_SECONDS + 1.0), "Long?")
    err = assert_error(post(server, {"model": MODEL, "messages": [long]}), 413, "audio_too_long", "too long")
    assert err["param"] == "messages[0].content[0]"
    health(server)
    huge = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    assert_error(post(server, huge), 413, "request_too_large")
    health(server)

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b" " * 65536

    assert_error(post(server, content=chunks()), 413, "request_too_large")
    health(server)


def test_unknown_model_and_route(server, client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert info.value.status_code == 404 and info.value.code == "model_not_found"
    assert_error(httpx.get(f"{server}/v2/nothing", headers={"Authorization": f"Bearer {KEY}"}), 404)
    health(server)


def test_api_key_is_checked_on_every_request(server):
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert info.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert_error(post(server, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, key=None), 401,
                 "invalid_api_key")
    assert_error(httpx.get(f"{server}/health"), 401)
    health(server)
