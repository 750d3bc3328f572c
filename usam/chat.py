"""USAMChat: a multi-turn, multi-clip conversation with a U-SAM model, in Python.

    chat = USAMChat.from_pretrained("runs/usam-tiny")
    print(chat.ask("clip.wav", "What is said?"))            # audio + question
    for piece in chat.ask(None, "And is there music?", stream=True):
        print(piece, end="", flush=True)                     # streamed text pieces
    chat.attach(other_clip); chat.ask(None, "Compare the two clips.")
    chat.last_expert_usage()                                 # (E,) mean routing weights of the last answer's audio

Earlier clips, questions and answers stay in the context of every later turn (the whole conversation is
rendered by USAMProcessor.apply_chat each turn). `reset()` forgets everything.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from usam.data.audio import SAMPLE_RATE, load_audio


def load_clip(audio, max_seconds: float | None = None, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A clip as float32 mono at `rate` (the model's input rate: `processor.sampling_rate`), from any of:
    a path (str / Path) or the encoded bytes of a file (wav, flac, ogg, mp3: decoded by usam.data.audio);
    a 1-D float array (taken to be at `rate` already); a (sample_rate, array) pair, as gradio gives it
    (int16/int32 or float samples, mono or (n, channels)), resampled with soxr.
    Raises usam.errors.DataError (decoding, too_long) or ValueError (bad array)."""
    from usam.errors import DataError

    if isinstance(audio, (str, Path, bytes, bytearray, memoryview)):
        return load_audio(audio, target_sr=rate, max_seconds=max_seconds)
    source_rate = rate
    if isinstance(audio, tuple) and len(audio) == 2 and np.isscalar(audio[0]):
        source_rate, audio = int(audio[0]), audio[1]
    wave = np.asarray(audio)
    if np.issubdtype(wave.dtype, np.integer):  # PCM: scale to [-1, 1)
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max + 1)
    wave = wave.astype(np.float32, copy=False)
    if wave.ndim == 2:  # (n, channels) -> mono
        wave = wave.mean(axis=1)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"audio must be a non-empty mono array or (rate, array), got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise DataError("nan_inf", "the audio array holds NaN or infinite samples", field="audio")
    if max_seconds is not None and wave.size / source_rate > max_seconds:
        raise DataError("too_long", f"{wave.size / source_rate:.2f} s is longer than the maximum {max_seconds:g} s",
                        field="audio")
    if source_rate != rate:
        import soxr

        wave = soxr.resample(wave, source_rate, rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(wave)


def _token_streamer(tokenizer):
    """A TextIteratorStreamer that hands over each token's text as soon as it is whole characters.

    transformers' TextStreamer holds text back to the last space (whole words), so an answer without spaces
    would arrive in one piece at the end. Here the whole answer is decoded at each step (without spacing
    clean-up, so earlier text never changes) and everything but a trailing incomplete UTF-8 character
    (U+FFFD until its bytes arrive) is sent."""
    from transformers import TextIteratorStreamer

    class TokenStreamer(TextIteratorStreamer):
        def __init__(self):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True,
                             clean_up_tokenization_spaces=False)
            self._ids: list[int] = []
            self._sent = 0
            self._prompt_skipped = False

        def _text(self) -> str:
            return self.tokenizer.decode(self._ids, **self.decode_kwargs)

        def put(self, value):
            if not self._prompt_skipped:  # generate() first hands over the prompt (empty: it starts from embeddings)
                self._prompt_skipped = True
                return
            self._ids.extend(value.reshape(-1).tolist())  # batch size 1: (1,) per step
            text = self._text()
            end = len(text)
            while end > self._sent and text[end - 1] == "\ufffd":
                end -= 1
            if end > self._sent:
                self.on_finalized_text(text[self._sent:end])
                self._sent = end

        def end(self):
            text = self._text()
            self.on_finalized_text(text[self._sent:], stream_end=True)
            self._sent = len(text)

    return TokenStreamer()


class USAMChat:
    """One conversation. The model and processor may be shared by several chats (they hold no chat state)."""

    def __init__(self, model, processor=None, *, max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, system: str | None = None, max_audio_seconds: float | None = None):
        from usam.processing import USAMProcessor

        self.model = model.eval()
        self.processor = processor or USAMProcessor.from_model(model)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.system = system
        self.max_audio_seconds = max_audio_seconds
        self.messages: list[dict] = []   # processor chat format; audio parts hold arrays at the input rate
        self.pending: list[np.ndarray] = []  # attached clips not yet sent with a question
        self._last_batch = None
        self._last_usage: np.ndarray | None = None

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | None = None, **kwargs) -> "USAMChat":
        from usam.modeling import USAMModel
        from usam.processing import USAMProcessor

        model = USAMModel.from_pretrained(model_dir)
        if device:
            model.to(device)
        return cls(model, USAMProcessor.from_pretrained(model_dir), **kwargs)

    @property
    def sampling_rate(self) -> int:
        return self.processor.sampling_rate

    # -- conversation state ---------------------------------------------------------------------------------
    def attach(self, audio) -> np.ndarray:
        """Add a clip (path, bytes, array or (rate, array)) to the next question. Returns the clip at the model's
        input rate (`self.sampling_rate`)."""
        clip = load_clip(audio, self.max_audio_seconds, self.sampling_rate)
        self.pending.append(clip)
        return clip

    def reset(self) -> None:
        self.messages, self.pending = [], []
        self._last_batch, self._last_usage = None, None

    @property
    def num_clips(self) -> int:
        return sum(1 for m in self.messages if isinstance(m["content"], list)
                   for p in m["content"] if p.get("type") == "audio") + len(self.pending)

    # -- asking ---------------------------------------------------------------------------------------------
    def ask(self, audio, question: str, stream: bool = False, *, max_new_tokens: int | None = None,
            temperature: float | None = None, top_p: float | None = None):
        """Ask a question, optionally with a new clip. Returns the answer (str), or with stream=True an
        iterator of text pieces; the answer joins the history once the iterator is exhausted."""
        if audio is not None:
            self.attach(audio)
        if not question or not question.strip():
            raise ValueError("the question is empty")
        content = [{"type": "audio", "audio": clip} for clip in self.pending]
        content.append({"type": "text", "text": question})
        conversation = list(self.messages)
        if self.system and not conversation:
            conversation.append({"role": "system", "content": self.system})
        conversation.append({"role": "user", "content": content})
        batch = self.processor.apply_chat([conversation], add_generation_prompt=True)
        batch = batch.to(self.model.device)
        kwargs = self._generation_kwargs(max_new_tokens, temperature, top_p)

        def commit(answer: str) -> None:
            self.messages = conversation + [{"role": "assistant", "content": answer}]
            self.pending = []
            self._last_batch, self._last_usage = batch, None

        if not stream:
            answer = self.processor.batch_decode(self.model.generate(**batch, **kwargs))[0]
            commit(answer)
            return answer
        return self._stream(batch, kwargs, commit)

    def _generation_kwargs(self, max_new_tokens, temperature, top_p) -> dict:
        temperature = self.temperature if temperature is None else temperature
        top_p = self.top_p if top_p is None else top_p
        kwargs = {"max_new_tokens": max_new_tokens or self.max_new_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p)
        return kwargs

    def _stream(self, batch, kwargs, commit) -> Iterator[str]:
        """model.generate runs in a thread and feeds a TextIteratorStreamer; closing the iterator early stops
        the generation (a stopping criterion watches a flag) and leaves the history unchanged."""
        from transformers import StoppingCriteria

        import torch

        cancel = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **_):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = _token_streamer(self.processor.tokenizer)
        result: dict = {}

        def run():
            try:
                result["ids"] = self.model.generate(**batch, **kwargs, streamer=streamer,
                                                    stopping_criteria=[_Cancelled()])
            except BaseException as err:  # handed to the consumer thread below
                result["error"] = err
                streamer.end()

        thread = threading.Thread(target=run, name="usam-chat-generate", daemon=True)
        thread.start()
        finished = False
        try:
            for piece in streamer:
                if piece:
                    yield piece
            finished = True
        finally:
            if not finished:
                cancel.set()
            thread.join()
        if "error" in result:
            raise result["error"]
        commit(self.processor.batch_decode(result["ids"])[0])

    # -- routing --------------------------------------------------------------------------------------------
    def last_expert_usage(self) -> np.ndarray | None:
        """(E,) mean routing weight of each projector expert over the audio tokens of the last answer's
        prompt (all clips in the conversation so far); None before the first answer or without audio.
        Computed once per turn, by one forward pass over the prompt (USAMOutput.routing_weights)."""
        if self._last_usage is None and self._last_batch is not None and "audio" in self._last_batch:
            import torch

            with torch.no_grad():
                weights = self.model(**self._last_batch).routing_weights  # (N_audio_tokens, E)
            if weights is not None and weights.shape[0] > 0:
                self._last_usage = weights.float().mean(0).cpu().numpy()
        return self._last_usage

    def expert_names(self) -> list[str]:
        return [f"expert {i}" for i in range(self.model.config.projector.num_experts)]
