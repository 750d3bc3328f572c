"""Reading practice from text alone (TASU, arXiv 2511.03310): training samples whose audio tokens are simulated
CTC posteriors of a sentence, so the LLM's LoRA learns to read posterior-weighted audio tokens
(usam/audio_tokens.py) from far more sentences than the corpus speaks, with no audio and no encoder.

Each sentence's tokens are corrupted at a controlled rate, as a CTC transcriber errs: a token is deleted,
replaced by another token of the sentence pool, or repeated, each with a third of `error_rate`. Each surviving
token becomes a simulated top-k posterior: 1 - smoothing on its own row, the rest spread over k - 1 random rows.
The target is the clean sentence, so the LLM learns to repair what the tokens misspell.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from usam.tasks import instruction_for

READING_STREAM = 7  # sample_rng's third key for a step's reading draw (its first two: the seed and the step)


@dataclass
class SimulatedAudio:
    """A clip's stand-in in a chat: K simulated posteriors, each over k vocabulary rows."""
    ids: np.ndarray  # (K, k) vocabulary rows, the token's own row first
    weights: np.ndarray  # (K, k) float32, rows summing to 1

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def corrupt(ids: list[int], error_rate: float, substitutes: list[int], rng: random.Random) -> list[int]:
    """Deletions, substitutions and repetitions, each at error_rate / 3 per token (at least one token kept)."""
    out = []
    third = error_rate / 3
    for token in ids:
        r = rng.random()
        if r < third:
            continue
        if r < 2 * third:
            out.append(rng.choice(substitutes))
        elif r < error_rate:
            out += [token, token]
        else:
            out.append(token)
    return out or [ids[rng.randrange(len(ids))]]


def simulate(ids: list[int], vocab_size: int, smoothing: float, top_k: int, rng: random.Random) -> SimulatedAudio:
    k = max(1, top_k)
    rows = np.empty((len(ids), k), dtype=np.int64)
    rows[:, 0] = ids
    if k > 1:
        rows[:, 1:] = np.array([[rng.randrange(vocab_size) for _ in range(k - 1)] for _ in ids]).reshape(len(ids), -1)
    weights = np.full((len(ids), k), smoothing / (k - 1) if k > 1 else 0.0, dtype=np.float32)
    weights[:, 0] = 1.0 - smoothing if k > 1 else 1.0
    return SimulatedAudio(rows, weights)


@dataclass
class ReadingSample:
    """What the collator needs of a training sample, with a SimulatedAudio for audio."""
    key: str
    audio: SimulatedAudio
    instruction: str
    target: str
    task: str = "asr"
    duration: float = 0.0


class ReadingPractice:
    """Draws reading-practice ASR samples from a sentence list, reproducibly from (seed, step)."""

    def __init__(self, tokenizer, sentences: list[str], error_rate: float, smoothing: float, top_k: int,
                 seed: int = 0):
        if not sentences:
            raise ValueError("reading practice: the sentence list is empty")
        if not 0.0 <= error_rate < 1.0:
            raise ValueError(f"reading practice: error_rate must be in [0, 1), got {error_rate}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"reading practice: smoothing must be in [0, 1), got {smoothing}")
        self.tokenizer, self.sentences = tokenizer, list(sentences)
        self.error_rate, self.smoothing, self.top_k, self.seed = error_rate, smoothing, top_k, seed
        from usam.llm import text_vocab_size

        self.vocab_size = text_vocab_size(tokenizer)  # (not the audio token)
        # substitutions come from the pool's own tokens (words a transcriber confuses), not the whole vocabulary
        rng = random.Random(seed)
        sample = rng.sample(self.sentences, min(len(self.sentences), 2000))
        self.substitutes = sorted({t for s in sample for t in self._ids(s)})

    def _ids(self, sentence: str) -> list[int]:
        return self.tokenizer(sentence, add_special_tokens=False).input_ids

    def draw(self, n: int, step: int, error_rate: float | None = None) -> list[ReadingSample]:
        """n samples for one training step (the same for the same seed and step, on every run and rank)."""
        from usam.training.collate import sample_rng  # (here: collate imports this module)

        rng = sample_rng(self.seed, step, READING_STREAM)
        rate = self.error_rate if error_rate is None else error_rate
        out = []
        for _ in range(n):
            index = rng.randrange(len(self.sentences))
            sentence = self.sentences[index]
            noisy = corrupt(self._ids(sentence), rate, self.substitutes, rng)
            audio = simulate(noisy, self.vocab_size, self.smoothing, self.top_k, rng)
            out.append(ReadingSample(f"reading-{index}", audio, instruction_for("asr", train=True, rng=rng), sentence))
        return out


def oracle_audio(tokenizer, text: str) -> SimulatedAudio:
    """One-hot posteriors of a text: what a perfect transcriber's tokens would be (the interface's ceiling)."""
    ids = tokenizer(text, add_special_tokens=False).input_ids or [tokenizer.eos_token_id]
    return SimulatedAudio(np.array(ids, dtype=np.int64)[:, None], np.ones((len(ids), 1), dtype=np.float32))
