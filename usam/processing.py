"""USAMProcessor: (audio, instruction, optional answer) or whole chats -> model inputs.

A transformers `ProcessorMixin`: a tokenizer and a raw-waveform feature extractor (`USAMFeatureExtractor`: the
encoders compute their own front ends inside the model, so the processor only pads), saved with
processor_config.json (how many audio tokens a clip becomes, the system prompt) and chat_template.jinja, so that
`AutoProcessor.from_pretrained(folder)` needs nothing else.

The tokenizer's own chat template renders each conversation. Audio parts and the user's text are marked
with private-use characters that no template alters; the rendered string is cut at the marks, so that
each clip becomes a run of `<|audio|>` tokens (as many as that clip's audio tokens) and the
instruction tokens are known (the router pools them). Labels cover only the answer (and the end of turn).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin, SequenceFeatureExtractor

from usam.config import AudioLayout, USAMConfig
from usam.llm import AUDIO_TOKEN, add_audio_token
from usam.reading import SimulatedAudio

AUDIO_MARK, TEXT_OPEN, TEXT_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "\ue000", "\ue001", "\ue002", "\ue003", "\ue004"
_SPLIT = re.compile(f"([{AUDIO_MARK}{TEXT_OPEN}{TEXT_CLOSE}{ANSWER_OPEN}{ANSWER_CLOSE}])")


def _as_wave(audio) -> np.ndarray:
    wave = np.asarray(audio, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"audio must be a non-empty mono 1-D array at the model's input rate, got shape {wave.shape}")
    return wave


def _read_clip(source: str | Path, rate: int) -> np.ndarray:
    """A clip at `rate` from a path, a file:// URL or an http(s) URL (read into memory, decoded with soundfile)."""
    from usam.chat import load_clip

    text = str(source)
    if text.startswith("file://"):
        return load_clip(text[len("file://"):], rate=rate)
    if text.startswith(("http://", "https://")):
        import urllib.request

        with urllib.request.urlopen(text, timeout=60) as response:  # noqa: S310 (the scheme is checked above)
            return load_clip(response.read(), rate=rate)
    return load_clip(Path(text), rate=rate)


def _simulated_tensors(simulated: list[tuple[int, SimulatedAudio]]) -> dict:
    """simulated_ids (S, K, k) padded with -1, simulated_weights (S, K, k), simulated_sample_index (S,)."""
    longest = max(len(c) for _, c in simulated)
    width = max(c.ids.shape[1] for _, c in simulated)
    ids = np.full((len(simulated), longest, width), -1, dtype=np.int64)
    weights = np.zeros((len(simulated), longest, width), dtype=np.float32)
    for i, (_, c) in enumerate(simulated):
        ids[i, : len(c), : c.ids.shape[1]] = c.ids
        ids[i, : len(c), c.ids.shape[1]:] = c.ids[:, :1]  # narrower rows repeat their own token at weight 0
        weights[i, : len(c), : c.ids.shape[1]] = c.weights
    return {"simulated_ids": torch.from_numpy(ids), "simulated_weights": torch.from_numpy(weights),
            "simulated_sample_index": torch.tensor([b for b, _ in simulated], dtype=torch.long)}


class USAMFeatureExtractor(SequenceFeatureExtractor):
    """Mono waveforms at the model's input rate -> `audio` (C, n) zero-padded and `audio_lengths` (C,)."""

    model_input_names = ["audio", "audio_lengths"]

    def __init__(self, sampling_rate: int = 16000, feature_size: int = 1, padding_value: float = 0.0, **kwargs):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)

    def check_sampling_rate(self, sampling_rate: int | None) -> None:
        """Refuse arrays said to be at another rate than the model's input rate (a 16 kHz clip read as 24 kHz
        would be heard 1.5x fast and its tokens miscounted). None: the caller vouches for the rate."""
        if sampling_rate is not None and int(sampling_rate) != self.sampling_rate:
            raise ValueError(f"sampling_rate: the audio is at {sampling_rate} Hz but this model reads "
                             f"{self.sampling_rate} Hz; resample it first, e.g. usam.chat.load_clip(path_or_array, "
                             f"rate=processor.sampling_rate) or load_clip((rate, array), rate=processor.sampling_rate)")

    def __call__(self, clips: list[np.ndarray], sampling_rate: int | None = None, return_tensors: str = "pt",
                 **_unused) -> BatchFeature:
        self.check_sampling_rate(sampling_rate)
        clips = [_as_wave(c) for c in clips]
        lengths = [len(c) for c in clips]
        audio = np.full((len(clips), max(lengths, default=0)), self.padding_value, dtype=np.float32)
        for i, c in enumerate(clips):
            audio[i, : len(c)] = c
        return BatchFeature({"audio": torch.from_numpy(audio), "audio_lengths": torch.tensor(lengths, dtype=torch.long)})


class USAMProcessor(ProcessorMixin):
    def __init__(self, feature_extractor=None, tokenizer=None, chat_template: str | None = None,
                 audio_layout: dict | None = None, system_prompt: str | None = None):
        """`audio_layout`: AudioLayout fields (USAMConfig.audio_layout); `system_prompt`: a system message for every
        chat (None: the template's own); `chat_template`: replaces the tokenizer's. Build one with `from_model`,
        `from_config` or `from_pretrained`."""
        if feature_extractor is None or tokenizer is None or audio_layout is None:
            raise ValueError("USAMProcessor needs a feature_extractor, a tokenizer and an audio_layout; use "
                             "USAMProcessor.from_pretrained(folder) or USAMProcessor.from_model(model)")
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        self.audio_layout = dict(audio_layout)  # (saved in processor_config.json)
        self.layout = AudioLayout(**self.audio_layout)
        self.system_prompt = system_prompt
        super().__init__(feature_extractor, tokenizer, chat_template=tokenizer.chat_template)
        self.audio_token = AUDIO_TOKEN
        self.audio_token_id = add_audio_token(tokenizer)
        self.special_ids = set(tokenizer.all_special_ids) | {self.audio_token_id}

    @property
    def sampling_rate(self) -> int:
        """The rate (Hz) audio arrays must have: the model's input rate (24 kHz with MERT, else 16 kHz)."""
        return self.feature_extractor.sampling_rate

    @classmethod
    def from_config(cls, tokenizer, config: USAMConfig) -> "USAMProcessor":
        return cls(USAMFeatureExtractor(sampling_rate=config.input_sample_rate), tokenizer,
                   audio_layout=dataclasses.asdict(config.audio_layout), system_prompt=config.llm.system_prompt)

    @classmethod
    def from_model(cls, model) -> "USAMProcessor":
        return cls.from_config(model.tokenizer, model.config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> "USAMProcessor":
        """A folder saved by USAMProcessor.save_pretrained or a U-SAM model's save_pretrained; a model folder written
        before processors had their own config is read through its config.json."""
        folder = Path(pretrained_model_name_or_path)
        if folder.is_dir() and not (folder / "processor_config.json").exists():
            if not (folder / "config.json").exists():
                raise FileNotFoundError(f"{folder}: neither processor_config.json nor config.json (not a U-SAM "
                                        "model or processor folder)")
            return cls.from_config(AutoTokenizer.from_pretrained(folder), USAMConfig.from_pretrained(folder))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # -- one conversation -> token ids + masks ----------------------------------------------------------------
    def _template_messages(self, conversation: list[dict], clips: list[np.ndarray]) -> list[dict]:
        messages = []
        for i, message in enumerate(conversation):
            role, content = message.get("role"), message.get("content")
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"message {i}: role must be system, user or assistant, got {role!r}")
            if isinstance(content, str):
                parts = [{"type": "text", "text": content}]
            elif isinstance(content, list):
                parts = content
            else:
                raise ValueError(f"message {i}: content must be a string or a list of parts")
            text = []
            for part in parts:
                kind = part.get("type")
                if kind == "audio":
                    if role != "user":
                        raise ValueError(f"message {i}: audio is only allowed in user messages")
                    audio = part["audio"]
                    clips.append(audio if isinstance(audio, SimulatedAudio) else _as_wave(audio))
                    text.append(AUDIO_MARK)
                elif kind == "text":
                    if role == "user":
                        text.append(TEXT_OPEN + part["text"] + TEXT_CLOSE)
                    elif role == "assistant" and message.get("_answer"):
                        text.append(ANSWER_OPEN + part["text"] + ANSWER_CLOSE)
                    else:
                        text.append(part["text"])
                else:
                    raise ValueError(f"message {i}: unknown content part type {kind!r}")
            messages.append({"role": role, "content": "".join(text)})
        return messages

    def _tokenize_marked(self, rendered: str, clips: list[np.ndarray], clip_offset: int, labelled: bool):
        """Token ids, instruction flags, answer flags and label flags for a rendered, marked string."""
        ids, instr, answer, label = [], [], [], []
        in_text = in_answer = False
        clip = clip_offset
        for piece in _SPLIT.split(rendered):
            if piece == AUDIO_MARK:
                # a simulated clip (reading practice) is read as it is: one placeholder per simulated token
                n = len(clips[clip]) if isinstance(clips[clip], SimulatedAudio) else self.layout.num_audio_tokens(
                    len(clips[clip]))
                clip += 1
                ids += [self.audio_token_id] * n
                instr += [False] * n
                answer += [False] * n
                label += [False] * n
            elif piece in (TEXT_OPEN, TEXT_CLOSE):
                in_text = piece == TEXT_OPEN
            elif piece in (ANSWER_OPEN, ANSWER_CLOSE):
                in_answer = piece == ANSWER_OPEN
            elif piece:
                tokens = self.tokenizer(piece, add_special_tokens=False).input_ids
                if self.audio_token_id in tokens:
                    raise ValueError(f"a message's text holds the audio token {self.tokenizer.decode([self.audio_token_id])}; "
                                     "give audio as an {\"type\": \"audio\"} part instead")
                ids += tokens
                instr += [in_text] * len(tokens)
                answer += [in_answer and t not in self.special_ids for t in tokens]
                label += [labelled] * len(tokens)
        return ids, instr, answer, label, clip

    def encode_conversation(self, conversation: list[dict], add_generation_prompt: bool):
        """-> dict(ids, instruction, answer, label lists) and the clips, in order.

        When the last message is an assistant message marked `_answer` (training), it is labelled.
        """
        clips: list[np.ndarray] = []
        system = self.system_prompt
        if system is not None and not (conversation and conversation[0].get("role") == "system"):
            conversation = [{"role": "system", "content": system}, *conversation]
        messages = self._template_messages(conversation, clips)
        train = bool(conversation) and conversation[-1].get("role") == "assistant" and conversation[-1].get("_answer")
        template = self.tokenizer.apply_chat_template
        if train:
            prompt = template(messages[:-1], tokenize=False, add_generation_prompt=True)
            full = template(messages, tokenize=False, add_generation_prompt=False)
            if not full.startswith(prompt):
                raise ValueError("the chat template does not render the prompt as a prefix of the full chat; "
                                 "labels cannot be placed")
            parts = [(prompt, False), (full[len(prompt):], True)]
        else:
            parts = [(template(messages, tokenize=False, add_generation_prompt=add_generation_prompt), False)]
        out = {"ids": [], "instruction": [], "answer": [], "label": []}
        clip = 0
        for rendered, labelled in parts:
            ids, instr, answer, label, clip = self._tokenize_marked(rendered, clips, clip, labelled)
            out["ids"] += ids
            out["instruction"] += instr
            out["answer"] += answer
            out["label"] += label
        return out, clips

    # -- batches --------------------------------------------------------------------------------------------
    def _collate(self, encoded: list[dict], clips_per_row: list[list[np.ndarray]], padding_side: str,
                 with_labels: bool, tasks=None) -> BatchFeature:
        longest = max(len(e["ids"]) for e in encoded)
        pad_id = self.tokenizer.pad_token_id
        rows = {k: [] for k in ("input_ids", "attention_mask", "instruction_mask", "answer_mask", "labels")}
        for e in encoded:
            n_pad = longest - len(e["ids"])
            pad = lambda seq, value: ([value] * n_pad + seq) if padding_side == "left" else (seq + [value] * n_pad)  # noqa: E731
            rows["input_ids"].append(pad(e["ids"], pad_id))
            rows["attention_mask"].append(pad([1] * len(e["ids"]), 0))
            rows["instruction_mask"].append(pad(e["instruction"], False))
            rows["answer_mask"].append(pad(e["answer"], False))
            rows["labels"].append(pad([t if lab else -100 for t, lab in zip(e["ids"], e["label"])], -100))
        data = {
            "input_ids": torch.tensor(rows["input_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(rows["attention_mask"], dtype=torch.long),
            "instruction_mask": torch.tensor(rows["instruction_mask"], dtype=torch.bool),
            "answer_mask": torch.tensor(rows["answer_mask"], dtype=torch.bool),
        }
        if with_labels:
            data["labels"] = torch.tensor(rows["labels"], dtype=torch.long)
        simulated = [(b, c) for b, row in enumerate(clips_per_row) for c in row if isinstance(c, SimulatedAudio)]
        if simulated:
            if any(not isinstance(c, SimulatedAudio) for b, _ in simulated for c in clips_per_row[b]):
                raise ValueError("a conversation mixes simulated and real audio; give each its own sample")
            data.update(_simulated_tensors(simulated))
            clips_per_row = [[] if any(isinstance(c, SimulatedAudio) for c in row) else row for row in clips_per_row]
        clips = [c for row in clips_per_row for c in row]
        if clips:
            data.update(self.feature_extractor(clips))
            data["audio_sample_index"] = torch.tensor([b for b, row in enumerate(clips_per_row) for _ in row],
                                                      dtype=torch.long)
        batch = BatchFeature(data)
        if tasks is not None:
            batch["tasks"] = list(tasks)
        return batch

    def check_sampling_rate(self, sampling_rate: int | None) -> None:
        """See USAMFeatureExtractor.check_sampling_rate."""
        self.feature_extractor.check_sampling_rate(sampling_rate)

    def __call__(self, audios, instructions, answers=None, tasks=None, padding_side: str | None = None,
                 sampling_rate: int | None = None) -> BatchFeature:
        """One clip and one instruction per sample; answers given -> a training batch (right padding, labels),
        else a generation batch (left padding, ends with the assistant prompt). `sampling_rate`: the rate of
        `audios`, checked against the model's (`self.sampling_rate`) when given."""
        self.check_sampling_rate(sampling_rate)
        if len(audios) != len(instructions) or (answers is not None and len(answers) != len(audios)):
            raise ValueError("audios, instructions and answers must have the same length")
        conversations = []
        for i, (audio, instruction) in enumerate(zip(audios, instructions)):
            chat = [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": instruction}]}]
            if answers is not None:
                chat.append({"role": "assistant", "content": answers[i], "_answer": True})
            conversations.append(chat)
        side = padding_side or ("right" if answers is not None else "left")
        return self.apply_chat(conversations, add_generation_prompt=answers is None, padding_side=side, tasks=tasks)

    def apply_chat(self, conversations: list[list[dict]], add_generation_prompt: bool = True,
                   padding_side: str = "left", tasks=None, sampling_rate: int | None = None) -> BatchFeature:
        """Several (multi-turn, multi-clip) chats -> one batch. See docs/model_api.md for the message format.
        `sampling_rate`: as in `__call__`."""
        self.check_sampling_rate(sampling_rate)
        encoded, clips = [], []
        for conversation in conversations:
            e, c = self.encode_conversation(conversation, add_generation_prompt)
            encoded.append(e)
            clips.append(c)
        with_labels = any(any(e["label"]) for e in encoded)
        return self._collate(encoded, clips, padding_side, with_labels, tasks)

    def apply_chat_template(self, conversation: list[dict] | list[list[dict]], chat_template: str | None = None,
                            add_generation_prompt: bool = False, continue_final_message: bool = False,
                            tokenize: bool = False, return_dict: bool = False, return_tensors: str | None = "pt",
                            padding_side: str = "left", processor_kwargs: dict | None = None, **_unused):
        """transformers' chat API: one chat (a list of messages) or several. Audio parts are
        `{"type": "audio", "path": ...}`, `{"type": "audio", "url": ...}` (http(s) or file://) or
        `{"type": "audio", "audio": array at the model's rate, or (rate, array)}`. tokenize False: the prompt text,
        each clip written as its run of `<|audio|>` tokens; tokenize True: the input ids, or with return_dict the
        whole batch (`generate(**batch)`). A chat template other than the processor's is refused, as is
        continue_final_message (the answer is written by generate)."""
        if chat_template is not None and chat_template != self.tokenizer.chat_template:
            raise ValueError("apply_chat_template: this processor renders with its own chat template "
                             "(set it with USAMProcessor(..., chat_template=...))")
        if continue_final_message:
            raise ValueError("apply_chat_template: continue_final_message is not supported; end the chat with a user "
                             "message and add_generation_prompt=True")
        if return_tensors not in ("pt", None):
            raise ValueError(f"apply_chat_template: return_tensors must be 'pt', got {return_tensors!r}")
        single = bool(conversation) and isinstance(conversation[0], dict)
        chats = [conversation] if single else list(conversation)
        chats = [[self._loaded_message(m) for m in chat] for chat in chats]
        batch = self.apply_chat(chats, add_generation_prompt=add_generation_prompt, padding_side=padding_side)
        if not tokenize:
            texts = [self.tokenizer.decode(row[mask.bool()].tolist())
                     for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
            return texts[0] if single else texts
        return batch if return_dict else batch["input_ids"]

    def _loaded_message(self, message: dict) -> dict:
        """A message whose audio parts given as a path or URL hold the decoded clip at the model's rate."""
        content = message.get("content")
        if not isinstance(content, list):
            return message
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "audio" and "audio" not in part:
                source = part.get("path", part.get("url"))
                if source is None:
                    raise ValueError("an audio part needs 'path', 'url' or 'audio'")
                part = {"type": "audio", "audio": _read_clip(source, self.sampling_rate)}
            elif isinstance(part, dict) and part.get("type") == "audio" and not isinstance(part["audio"],
                                                                                           (SimulatedAudio, np.ndarray)):
                from usam.chat import load_clip

                part = {"type": "audio", "audio": load_clip(part["audio"], rate=self.sampling_rate)}
            parts.append(part)
        return {**message, "content": parts}

    def estimate_lengths(self, entries) -> list[int]:
        """An upper bound on the tokens of each manifest entry's training sample (audio placeholders, chat template,
        instruction and the longest reference), for batches capped in tokens (data.max_tokens). Texts are
        tokenized alone, in one batched call per kind; a sample without its own instruction is counted with the
        longest of its task's training phrasings; 2 tokens per text allow for merges at their edges."""
        from usam.tasks import LANGUAGE_NAMES, TRAIN_INSTRUCTIONS

        entries = list(entries)
        if not entries:
            return []
        rate = self.sampling_rate
        probe = np.zeros(rate // 10, dtype=np.float32)
        empty, _ = self.encode_conversation(
            [{"role": "user", "content": [{"type": "audio", "audio": probe}, {"type": "text", "text": ""}]},
             {"role": "assistant", "content": "", "_answer": True}], add_generation_prompt=False)
        template = len(empty["ids"]) - self.layout.num_audio_tokens(len(probe))

        def count(texts: list[str]) -> list[int]:
            if not texts:
                return []
            return [len(ids) + 2 for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

        longest_phrasing = {task: max(count([p.format(lang=max(LANGUAGE_NAMES.values(), key=len), question="")
                                              for p in phrasings]))
                            for task, phrasings in TRAIN_INSTRUCTIONS.items()}
        answers = count([max(e.text, key=len) if e.text else "" for e in entries])
        own = [i for i, e in enumerate(entries) if e.instruction]
        own_counts = dict(zip(own, count([entries[i].instruction for i in own])))
        return [self.layout.num_audio_tokens(int(round(e.duration * rate))) + template + answers[i]
                + own_counts.get(i, longest_phrasing.get(e.task, 0)) for i, e in enumerate(entries)]

    def answer_token_ids(self, text: str) -> list[int]:
        """The tokens a training sample labels for the answer `text`, up to and including the end-of-turn token
        that closes it (what the model learned to write; closed-set scoring scores exactly these)."""
        encoded, _ = self.encode_conversation([{"role": "user", "content": "?"},
                                               {"role": "assistant", "content": text, "_answer": True}],
                                              add_generation_prompt=False)
        answer = [i for i, a in enumerate(encoded["answer"]) if a]
        if not answer:
            raise ValueError(f"the answer {text!r} has no tokens")
        end = next((i for i in range(answer[-1] + 1, len(encoded["ids"])) if encoded["label"][i]
                    and encoded["ids"][i] in self.special_ids), None)
        if end is None:
            raise ValueError("the chat template closes an answer with no special end token; closed-set scoring "
                             "needs one")
        return encoded["ids"][answer[0]: end + 1]

    def batch_decode(self, ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
