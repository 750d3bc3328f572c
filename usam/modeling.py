"""USAMForConditionalGeneration (alias USAMModel): encoders -> common time axis -> window Q-Former -> task-aware
MoE projector -> LLM.

Shapes (C clips in a batch of B samples, usually C == B):
  audio (C, n) at the input rate -> each encoder (C, T_e, D_e) -> aligned U (C, T, sum D_e) -> Q-Former Z (C, W*q, D_q)
  -> projector A (C, W*q, D_llm) -> the valid tokens replace the `<|audio|>` placeholders of input_ids.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import GenerationConfig, GenerationMixin, LogitsProcessorList, PreTrainedModel
from transformers.utils import ModelOutput

from usam.align import align_streams
from usam.config import USAMConfig
from usam.ctc import CTCAlignment
from usam.encoders import EncoderOutput, build_encoder
from usam.llm import add_audio_token, load_llm, load_tokenizer
from usam.precision import run_in
from usam.projector import TaskAwareMoEProjector
from usam.qformer import build_window_connector
from usam.ragged import drop_unattended, length_groups, masked_mean, pack_rows, row_mask
from usam.sacl import SemanticAwareContrastiveLoss

WEIGHTS_NAME = "usam_weights.safetensors"
ADAPTER_DIR = "llm_adapter"
LLM_DIR = "llm"
GENERATION_CONFIG_NAME = "generation_config.json"
AUTO_MODULE = "usam_auto"
AUTO_CLASSES = {"AutoConfig": "USAMConfig", "AutoModel": "USAMForConditionalGeneration",
                "AutoModelForMultimodalLM": "USAMForConditionalGeneration", "AutoProcessor": "USAMProcessor",
                "AutoFeatureExtractor": "USAMFeatureExtractor"}
AUTO_MODULE_TEXT = '''"""U-SAM's classes from the installed `usam` package, for transformers' Auto classes with trust_remote_code=True.
(`import usam` registers them without it.)"""
from usam.config import USAMConfig  # noqa: F401
from usam.modeling import USAMForConditionalGeneration  # noqa: F401
from usam.processing import USAMFeatureExtractor, USAMProcessor  # noqa: F401
'''


@dataclass
class USAMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    ce_loss: torch.Tensor | None = None
    sacl_loss: torch.Tensor | None = None
    balance_loss: torch.Tensor | None = None
    z_loss: torch.Tensor | None = None
    ctc_loss: torch.Tensor | None = None
    # (B, L, V); or, with `logit_labels` (B, K), (B, K, V): the scores of those next tokens (-100: unlabelled)
    logits: torch.Tensor | None = None
    logit_labels: torch.Tensor | None = None
    routing_weights: torch.Tensor | None = None  # (N_tokens, E) for every valid audio token of the batch
    routing_sample_index: torch.Tensor | None = None  # (N_tokens,) batch row of each token
    # audio-token health (detached): mean L2 norm of the valid audio tokens over that of the answer's text
    # embeddings, and the mean cosine between different clips' mean audio tokens (near 1: clips look alike)
    audio_norm_ratio: torch.Tensor | None = None
    audio_clip_cosine: torch.Tensor | None = None


def _cache_keyword(llm) -> str:
    """The keyword that passes a KV cache to this LLM's forward: `cache` from transformers 5.x's rename on,
    `past_key_values` before it (and still accepted, with a warning, after)."""
    import inspect

    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _dtype_name(dtype) -> str | None:
    """from_pretrained's dtype (torch.bfloat16, "bfloat16", "auto", None) -> a float dtype's name, or None."""
    if dtype is None or dtype == "auto":
        return None
    name = str(dtype).removeprefix("torch.")
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16, float16 or auto, got {dtype!r}")
    return name


def _single_device(device_map) -> torch.device | None:
    """from_pretrained's device_map: one device for the whole model (its parts hand tensors to each other without
    moving them, so a map that splits it across devices would fail in the forward)."""
    if device_map is None:
        return None
    if isinstance(device_map, dict):
        raise ValueError("device_map: give one device for the whole model (\"cpu\", \"cuda:0\", \"auto\"); "
                         "per-module maps are not supported")
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device_map)


def _padded_token_rows(rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids (N, A) zero-padded to the longest, valid (N, A) bool)."""
    longest = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
    valid = torch.zeros(len(rows), longest, dtype=torch.bool, device=device)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r, device=device)
        valid[k, : len(r)] = True
    return ids, valid


def _lora_config(settings, **extra):
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.targets), **extra)


class USAMForConditionalGeneration(PreTrainedModel, GenerationMixin):
    """A transformers model: `AutoModel` / `AutoModelForMultimodalLM` load it after `import usam`, `generate()` honours
    `GenerationConfig`, and `pipeline("any-to-any")` runs it with `USAMProcessor`. Its parts come from their own
    checkpoints (the LLM by hub id or folder, the encoders likewise) and a saved folder holds what training changed
    (save_pretrained) or everything (export_merged)."""

    config_class = USAMConfig
    base_model_prefix = "usam"
    main_input_name = "input_ids"
    input_modalities = ("audio", "text")
    output_modalities = ("text",)
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config: USAMConfig, adapter_dir: str | Path | None = None, llm_device=None):
        """`llm_device`: load the LLM's weights straight onto this device (the rest stays on the CPU until moved)."""
        super().__init__(config)
        # training forward: rows of very different lengths through the LLM in two passes (set_llm_row_groups)
        self.llm_row_groups = True
        self.encoders = nn.ModuleDict({name: build_encoder(name, getattr(config, name), config.input_sample_rate)
                                       for name in config.enabled_encoders})
        for name, encoder in self.encoders.items():
            self._set_encoder_training(encoder, getattr(config, name))
        llm, self.llm_pretrained = load_llm(config.llm, device=llm_device)
        self.tokenizer = load_tokenizer(config.llm)
        # `<|audio|>` marks each audio token in input_ids; its embedding is never read (the audio's replaces it)
        self.audio_token_id = config.audio_token_id = add_audio_token(self.tokenizer)
        config.text_config = llm.config  # (the composite config's LLM part, as transformers' multimodal models have)
        llm_dim = llm.get_input_embeddings().embedding_dim
        input_dim = sum(enc.output_dim for enc in self.encoders.values())
        self.qformer = build_window_connector(config.qformer, input_dim, config.window_frames, config.stride_frames,
                                              [enc.output_dim for enc in self.encoders.values()],
                                              config.rhythm_lags)
        self.projector = TaskAwareMoEProjector(config.projector, self.qformer.output_dim, llm_dim)
        self.sacl = SemanticAwareContrastiveLoss(config.loss.sacl, llm_dim) if config.loss.lambda_sac > 0 else None
        # the CTC head: trained by loss.lambda_ctc, and read by posterior-weighted audio tokens (usam/audio_tokens.py)
        needs_ctc = config.loss.lambda_ctc > 0 or config.audio_tokens.mode != "continuous"
        self.ctc = CTCAlignment(llm_dim, vocab_rows=config.loss.ctc_vocab_rows) if needs_ctc else None
        if self.projector.output_norm is not None:
            with torch.no_grad():  # audio tokens start at the scale of the LLM's text tokens
                rms = llm.get_input_embeddings().weight.float().pow(2).mean().sqrt()
                self.projector.output_norm.weight.fill_(float(rms))
        self.llm = self._wrap_llm(llm, adapter_dir)
        # generate()'s defaults; a saved folder's generation_config.json replaces them (from_pretrained)
        self.generation_config = self.default_generation_config()
        self.post_init()
        if config.llm.gradient_checkpointing:
            # transformers 5 renamed the method (and its argument); older releases only have the first name
            if hasattr(self.llm, "activation_checkpointing_enable"):
                self.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # -- construction helpers -------------------------------------------------------------------------------
    @staticmethod
    def _set_encoder_training(encoder, settings) -> None:
        extra = [p for n, p in encoder.named_parameters() if n == "layer_weights"]  # MERT layer mix: always trained
        if settings.train == "lora":
            from peft import inject_adapter_in_model

            inject_adapter_in_model(_lora_config(settings.lora), encoder)
        for name, param in encoder.named_parameters():
            param.requires_grad = settings.train == "full" or (settings.train == "lora" and "lora_" in name)
        for param in extra:
            param.requires_grad = True

    def _wrap_llm(self, llm, adapter_dir):
        mode = self.config.llm.train
        if mode == "lora":
            from peft import PeftModel, get_peft_model

            if adapter_dir is not None:
                return PeftModel.from_pretrained(llm, str(adapter_dir), is_trainable=True)
            return get_peft_model(llm, _lora_config(self.config.llm.lora, task_type="CAUSAL_LM"))
        llm.requires_grad_(mode == "full")
        return llm

    def set_llm_row_groups(self, enabled: bool) -> None:
        """Whether a training forward may run the LLM twice, on its short rows and on its long ones, rather than once
        on all rows padded to the longest. Off under ZeRO-3 with several ranks: every module call gathers its
        partitioned parameters collectively, so every rank must call the LLM as often as the others."""
        self.llm_row_groups = bool(enabled)

    def set_stage(self, stage: int) -> None:
        """Stage 1 trains the connector with the LLM frozen; stage 2 adds the LLM's own training mode."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        for name, param in self.llm.named_parameters():
            param.requires_grad = stage == 2 and (self.config.llm.train == "full" or "lora_" in name)

    def train(self, mode: bool = True):
        super().train(mode)
        # frozen parts always run in eval mode: no dropout, layerdrop or SpecAugment (defect 5)
        for encoder in self.encoders.values():
            if not any(p.requires_grad and not n.endswith("layer_weights") for n, p in encoder.named_parameters()):
                encoder.eval()
        if not any(p.requires_grad for p in self.llm.parameters()):
            self.llm.eval()
            if mode and self.config.llm.gradient_checkpointing:
                # transformers checkpoints a decoder layer only in training mode, yet stage 1 backpropagates
                # through every frozen layer to the audio tokens: flag the layers themselves (not their
                # children) as training, so they checkpoint while their attention and dropout stay in eval
                from transformers.modeling_layers import GradientCheckpointingLayer

                for module in self.llm.modules():
                    if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
                        module.training = True
        return self

    def trainable_parameters(self):
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def init_weights(self):
        """Nothing to do: every part initialises itself (pretrained loaders, the connector's own constructors), and
        transformers' generic initialisation would overwrite the loaded encoders and LLM."""

    def get_input_embeddings(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.llm.get_output_embeddings()

    @property
    def device(self) -> torch.device:
        return next(self.qformer.parameters()).device

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(input_ids.masked_fill(input_ids == self.audio_token_id, 0))

    # -- audio path -----------------------------------------------------------------------------------------
    def encode_audio(self, audio: torch.Tensor, audio_lengths: torch.Tensor) -> dict[str, EncoderOutput]:
        """Every enabled encoder on a (C, n) batch at the input rate. Frozen encoders run without gradients."""
        outputs = {}
        for name, encoder in self.encoders.items():
            trainable = any(p.requires_grad for p in encoder.parameters())
            # (a plain no_grad, not set_grad_enabled(True): transformers' output capture drops the
            # hidden states inside a set_grad_enabled(True) block)
            with contextlib.nullcontext() if trainable else torch.no_grad():
                outputs[name] = encoder(audio, audio_lengths)
        return outputs

    def encoder_fingerprint(self, name: str) -> str:
        """A hash of one encoder's settings and weights, so a feature cache can tell it is stale."""
        import hashlib

        h = hashlib.sha256(json.dumps(dataclasses.asdict(getattr(self.config, name)), sort_keys=True).encode())
        if self.config.input_sample_rate != self.config.native_sample_rate(name):  # its features pass a resampler
            h.update(f"input_sample_rate={self.config.input_sample_rate}".encode())
        for key, tensor in sorted(self.encoders[name].state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def project_audio(self, encoder_outputs: dict[str, EncoderOutput], audio_lengths: torch.Tensor,
                      instruction: torch.Tensor):
        """-> tokens (C, N, D_llm), mask (C, N), ProjectorOutput."""
        frames = torch.tensor([self.config.num_frames(int(n)) for n in audio_lengths.tolist()],
                              device=audio_lengths.device)
        streams = {name: encoder_outputs[name] for name in self.encoders}
        aligned = align_streams(streams, frames)
        tokens, mask = run_in(self.qformer, aligned.features, aligned.mask)
        projected = self.projector(tokens, mask, instruction)
        return projected.tokens, mask, projected

    def _pooled_instruction(self, embeds: torch.Tensor, instruction_mask: torch.Tensor | None) -> torch.Tensor:
        if instruction_mask is None:
            return embeds.new_zeros(embeds.shape[0], embeds.shape[-1])
        return masked_mean(embeds, instruction_mask)

    def _vocabulary_embeddings(self) -> torch.Tensor:
        """(V, D) the LLM's input embeddings. A plain nn.Embedding whose weight ZeRO-3 does not manage gives its
        weight itself; any other is read through the module, so that ZeRO-3 gathers a partitioned table and an
        embedding whose forward scales its rows (Gemma's) is read as the LLM reads it. (The lookup of every row
        copies the table: 113 MB for SmolLM2, 37 ms of a 0.4 s alignment step on 2 CPU cores.)"""
        table = self.llm.get_input_embeddings()
        # ZeRO-3 swaps a module's parameter dict for one that gathers a weight when it is read: test the dict's
        # type first, so that reading .weight here never gathers outside the module's own forward
        if type(table) is nn.Embedding and type(table._parameters) is dict and not hasattr(table.weight, "ds_id"):
            return table.weight
        return table(torch.arange(table.num_embeddings, device=self.device))

    def llm_audio_tokens(self, tokens: torch.Tensor, mask: torch.Tensor, hide_continuous: torch.Tensor | None = None,
                         ctc_logits: torch.Tensor | None = None):
        """What the LLM reads for projector tokens (C, N, D) with mask (C, N), by audio_tokens.mode ->
        (tokens (C, M, D), placeholder mask (C, M), attended (C, M)): M = N, or 2N for hybrid (continuous, then
        posterior). Posterior frames that are dropped or merged stay in place, unattended; so does the continuous
        half of the hybrid clips flagged in hide_continuous (C,). ctc_logits: the CTC head's logits of these
        tokens (C, N, V + 1) where already computed."""
        settings = self.config.audio_tokens
        if settings.mode == "continuous":
            return tokens, mask, mask
        from usam.audio_tokens import posterior_tokens

        with torch.no_grad():
            table = self._vocabulary_embeddings()
        posterior, keep = posterior_tokens(self.ctc, tokens, mask, table, settings, ctc_logits)
        posterior = posterior.to(tokens.dtype)
        if settings.mode == "posterior":
            return posterior, mask, keep
        shown = mask if hide_continuous is None else mask & ~hide_continuous[:, None]
        return torch.cat([tokens, posterior], 1), torch.cat([mask, mask], 1), torch.cat([shown, keep], 1)

    def _clips_to_hide(self, tasks: list[str] | None, audio_sample_index: torch.Tensor) -> torch.Tensor | None:
        """(C,) which clips' continuous halves this training step hides (audio_tokens.hide_continuous), or None."""
        settings = self.config.audio_tokens
        if not self.training or settings.hide_continuous <= 0 or tasks is None:
            return None
        eligible = torch.tensor([tasks[int(i)] in settings.hide_continuous_tasks for i in audio_sample_index],
                                dtype=torch.bool, device=audio_sample_index.device)
        # the global generator, which the trainer seeds: reproducible per step on one machine
        drawn = torch.rand(eligible.shape[0]) < settings.hide_continuous
        return eligible & drawn.to(eligible.device)

    def _inputs_embeds(self, input_ids, attention_mask, instruction_mask, audio, audio_lengths, audio_sample_index,
                       encoder_outputs, simulated_ids=None, simulated_weights=None, simulated_sample_index=None,
                       for_llm: bool = True, tasks: list[str] | None = None):
        """-> (input embeddings (B, L, D), attention mask (B, L) with the unattended audio frames at 0, info on the
        audio path or None). Reading practice without audio (usam/reading.py): the placeholders of the samples
        simulated_sample_index (S,) take simulated posterior tokens of a text, simulated_weights (S, K, k) over the
        vocabulary rows simulated_ids (S, K, k) (-1: padding). for_llm False (a step that never runs the LLM): the
        projector's tokens only, nothing placed in the embeddings."""
        embeds = self.embed_tokens(input_ids)  # (B, L, D)
        placeholder = input_ids == self.audio_token_id
        if simulated_ids is not None:
            simulated, tokens = self._simulated_tokens(placeholder, simulated_ids, simulated_weights,
                                                       simulated_sample_index)
            embeds = embeds.masked_scatter(simulated[..., None], tokens.to(embeds.dtype))
            placeholder = placeholder & ~simulated  # the rest are the clips' own
        n_placeholders = int(placeholder.sum())
        if audio_lengths is None or (audio is None and encoder_outputs is None):
            if n_placeholders:
                raise ValueError(f"input_ids hold {n_placeholders} audio placeholders but no audio was given")
            return embeds, attention_mask, None
        if audio_sample_index is None:
            audio_sample_index = torch.arange(audio_lengths.shape[0], device=input_ids.device)
        if encoder_outputs is None:
            encoder_outputs = self.encode_audio(audio, audio_lengths)
        instruction = self._pooled_instruction(embeds.detach(), instruction_mask)[audio_sample_index]
        tokens, mask, projected = self.project_audio(encoder_outputs, audio_lengths, instruction)
        info = dict(tokens=tokens, mask=mask, projected=projected, sample_index=audio_sample_index)
        if not for_llm:
            return embeds, attention_mask, info
        if not torch.is_grad_enabled() and self.ctc is not None and self.config.audio_tokens.mode != "continuous":
            # inference: the posterior tokens, joint decoding and answer scores all read these (C, N, V + 1)
            # logits, the costliest product of the CTC head; computed once here
            info["ctc_logits"] = self.ctc.logits(tokens, self._vocabulary_embeddings())
        read, slots, attended = self.llm_audio_tokens(tokens, mask, self._clips_to_hide(tasks, audio_sample_index),
                                                      info.get("ctc_logits"))
        flat = read[slots]  # valid tokens, clip by clip, in order: the order of the placeholders
        if flat.shape[0] != n_placeholders:
            raise ValueError(f"the batch has {n_placeholders} audio placeholders but the audio gives {flat.shape[0]} "
                             "tokens; build batches with USAMProcessor for this model's config")
        embeds = embeds.masked_scatter(placeholder[..., None], flat.to(embeds.dtype))
        if attention_mask is not None and self.config.audio_tokens.mode != "continuous":
            attention_mask = attention_mask.masked_scatter(placeholder, attended[slots].to(attention_mask.dtype))
        return embeds, attention_mask, info

    @torch.no_grad()
    def audio_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, audio: torch.Tensor,
                         audio_lengths: torch.Tensor, instruction_mask: torch.Tensor | None = None,
                         audio_sample_index: torch.Tensor | None = None,
                         **_unused) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """What takes the place of each clip's run of `<|audio|>` tokens, clip by clip: (embeddings (n, D), attended
        (n,) bool), n the run's length. They depend on the clip and its sample's instruction only (pooled for the
        router), not on the rest of the batch, so a serving engine that keeps its own KV cache can compute them per
        clip and put them at the audio token positions, leaving the unattended ones out of attention."""
        embeds, attention, _ = self._inputs_embeds(input_ids, attention_mask, instruction_mask, audio, audio_lengths,
                                                   audio_sample_index, None)
        placeholder = input_ids == self.audio_token_id
        # (the processor lists clips in the order of their rows, so row-major order is clip order)
        counts = [self.config.num_audio_tokens(int(n)) for n in audio_lengths]
        return list(zip(embeds[placeholder].split(counts), attention[placeholder].bool().split(counts)))

    def _simulated_tokens(self, placeholder, simulated_ids, simulated_weights, simulated_sample_index):
        """-> (the reading-practice samples' placeholders (B, L), their simulated tokens (n, D) in order)."""
        rows = torch.zeros(placeholder.shape[0], dtype=torch.bool, device=placeholder.device)
        rows[simulated_sample_index] = True
        mask = placeholder & rows[:, None]
        with torch.no_grad():
            table = self._vocabulary_embeddings()
        # (S, K, k) rows and weights of each simulated posterior -> (S, K, D), the valid ones in order
        tokens = (simulated_weights[..., None].to(table.dtype) * table[simulated_ids.clamp(min=0)]).sum(-2)
        tokens = tokens[simulated_ids[..., 0] >= 0]
        if tokens.shape[0] != int(mask.sum()):
            raise ValueError(f"reading-practice samples hold {int(mask.sum())} placeholders but "
                             f"{tokens.shape[0]} simulated tokens")
        return mask, tokens

    # -- forward / loss -------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                instruction_mask: torch.Tensor | None = None, answer_mask: torch.Tensor | None = None,
                audio: torch.Tensor | None = None, audio_lengths: torch.Tensor | None = None,
                audio_sample_index: torch.Tensor | None = None,
                encoder_outputs: dict[str, EncoderOutput] | None = None, logits_to_keep: str = "labels",
                tasks: list[str] | None = None, simulated_ids: torch.Tensor | None = None,
                simulated_weights: torch.Tensor | None = None, simulated_sample_index: torch.Tensor | None = None,
                **_unused) -> USAMOutput:
        """Loss parts and logits. With labels and logits_to_keep="labels" (default), `logits` (B, K, V) covers only
        the positions whose next token is labelled, after the unattended positions are dropped
        (usam.ragged.drop_unattended), and `logit_labels` (B, K) holds those next tokens (-100: none); otherwise
        `logits` covers every position (B, L, V) and `logit_labels` is None."""
        lc = self.config.loss
        runs_llm = lc.lambda_ce > 0 or labels is None  # lambda_ce 0: an alignment step that never runs the LLM
        embeds, attention_mask, info = self._inputs_embeds(
            input_ids, attention_mask, instruction_mask, audio, audio_lengths, audio_sample_index, encoder_outputs,
            simulated_ids, simulated_weights, simulated_sample_index, for_llm=runs_llm, tasks=tasks)
        logits, logit_labels = None, None
        if runs_llm:
            if labels is not None and logits_to_keep == "labels":
                logits, logit_labels = self._answer_logits(embeds, attention_mask, labels)
            else:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # from the mask
                logits = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False).logits
        zero = embeds.new_zeros((), dtype=torch.float32)
        ce = sacl = balance = z_loss = ctc = zero
        norm_ratio = clip_cosine = None
        if labels is not None and logits is not None:
            scores, targets = (logits, logit_labels) if logit_labels is not None else (logits[:, :-1], labels[:, 1:])
            ce = nn.functional.cross_entropy(scores.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        routing, routing_index = None, None
        if info is not None:
            projected = info["projected"]
            balance, z_loss = projected.balance_loss, projected.z_loss
            routing = projected.weights[info["mask"]]
            routing_index = info["sample_index"][:, None].expand_as(info["mask"])[info["mask"]]
            if self.sacl is not None and labels is not None and answer_mask is not None:
                sacl = self._sacl(info, embeds, answer_mask)
            if self.ctc is not None and labels is not None and answer_mask is not None:
                ctc = self._ctc(info, input_ids, answer_mask, tasks)
            if answer_mask is not None:
                norm_ratio, clip_cosine = self._audio_token_health(info, embeds, input_ids, answer_mask)
        if labels is not None:
            loss = (lc.lambda_ce * ce + lc.lambda_sac * sacl + lc.lambda_bal * balance + lc.lambda_z * z_loss
                    + lc.lambda_ctc * ctc)
        else:
            loss = None
        return USAMOutput(loss=loss, ce_loss=ce, sacl_loss=sacl, balance_loss=balance, z_loss=z_loss, ctc_loss=ctc,
                          logits=logits, logit_labels=logit_labels,
                          routing_weights=routing, routing_sample_index=routing_index,
                          audio_norm_ratio=norm_ratio, audio_clip_cosine=clip_cosine)

    def _answer_logits(self, embeds, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """The LLM's scores where a next token is labelled: (B, K, V) logits and (B, K) their next tokens (-100:
        none). The LLM runs on the attended positions only (hybrid reading leaves most spelled-token slots
        unattended; usam.ragged.drop_unattended), answers right-aligned so that the LM head (49k rows for SmolLM2,
        a large share of a step) covers the longest answer's columns, and rows of very different lengths (reading
        practice beside clips) in two passes rather than one padded to the longest (usam.ragged.length_groups).
        Rows are independent in the LLM: the scores are those of one full pass."""
        embeds, attention_mask, labels = drop_unattended(embeds, attention_mask, labels)
        lengths = attention_mask.sum(1).tolist()
        groups = length_groups(lengths) if self.llm_row_groups else [list(range(len(lengths)))]
        parts = []
        for rows in groups:
            if len(groups) == 1:
                group_embeds, mask, tokens, index = embeds, attention_mask, labels, None
            else:
                index = torch.tensor(rows, device=embeds.device)
                start = embeds.shape[1] - max(lengths[r] for r in rows)  # right-aligned: drop all-padding columns
                group_embeds = embeds.index_select(0, index)[:, start:]
                mask = attention_mask.index_select(0, index)[:, start:]
                tokens = labels.index_select(0, index)[:, start:]
            keep = (tokens[:, 1:] != -100).any(0).nonzero().squeeze(1)
            logits = self.llm(inputs_embeds=group_embeds, attention_mask=mask,
                              position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0), use_cache=False,
                              logits_to_keep=keep).logits
            parts.append((index, logits, tokens[:, 1:].index_select(1, keep)))
        if len(parts) == 1:
            return parts[0][1], parts[0][2]
        # back into batch order, each group's columns right-aligned under the longest group's
        longest = max(p[1].shape[1] for p in parts)
        logits = parts[0][1].new_zeros((embeds.shape[0], longest, parts[0][1].shape[-1]))
        targets = labels.new_full((embeds.shape[0], longest), -100)
        for index, part, part_targets in parts:
            logits = logits.index_copy(0, index, nn.functional.pad(part, (0, 0, longest - part.shape[1], 0)))
            targets = targets.index_copy(0, index, nn.functional.pad(part_targets, (longest - part.shape[1], 0),
                                                                     value=-100))
        return logits, targets

    def _ctc(self, info, input_ids, answer_mask, tasks) -> torch.Tensor:
        """CTC of each clip's audio tokens against its sample's answer tokens (samples of loss.ctc_tasks; every
        sample when the batch carries no task names). A sample's clips are joined in order."""
        tokens, mask, owner = info["tokens"], info["mask"], info["sample_index"]
        wanted = set(self.config.loss.ctc_tasks)
        answer_mask = answer_mask.bool()
        # each sample's answer tokens from two host copies, not a boolean index per row (a sync each)
        answers = torch.split(input_ids[answer_mask], answer_mask.sum(1).tolist())
        targets, seen = [], set()
        for b in owner.tolist():
            take = b not in seen and (tasks is None or tasks[b] in wanted)  # the answer goes with the first clip
            seen.add(b)
            targets.append(answers[b] if take else input_ids.new_zeros(0))
        with torch.no_grad():
            embeddings = self._vocabulary_embeddings()
        return self.ctc(tokens, mask, targets, embeddings)

    @torch.no_grad()
    def ctc_transcribe(self, input_ids, instruction_mask=None, audio=None, audio_lengths=None,
                       audio_sample_index=None, encoder_outputs=None, **_unused) -> list[list[int]]:
        """What each clip's audio tokens spell through the CTC alignment head (loss.lambda_ctc > 0): greedy, over
        the LLM's whole vocabulary; one list of token ids per clip. No LLM forward: a cheap view of how far the
        connector has moved into the LLM's embedding space."""
        if self.ctc is None:
            raise ValueError("ctc_transcribe needs the CTC alignment head (loss.lambda_ctc > 0)")
        _, _, info = self._inputs_embeds(input_ids, None, instruction_mask, audio, audio_lengths, audio_sample_index,
                                         encoder_outputs, for_llm=False)
        return self.ctc.greedy(info["tokens"], info["mask"], self._vocabulary_embeddings())

    @torch.no_grad()
    def _audio_token_health(self, info, embeds, input_ids, answer_mask):
        tokens, mask = info["tokens"].float(), info["mask"]
        audio_norm = tokens[mask].norm(dim=-1).mean()
        text = embeds.detach().float()[answer_mask.bool()]
        ratio = audio_norm / text.norm(dim=-1).mean() if text.shape[0] else audio_norm.new_tensor(float("nan"))
        means = nn.functional.normalize(masked_mean(tokens, mask), dim=-1)[mask.any(1)]
        n = means.shape[0]
        if n < 2:
            return ratio, audio_norm.new_tensor(float("nan"))
        cos = means @ means.T
        return ratio, (cos.sum() - cos.diagonal().sum()) / (n * (n - 1))

    def _sacl(self, info, embeds, answer_mask) -> torch.Tensor:
        """Audio tokens of each sample (its clips concatenated) against its answer's input embeddings, read from the
        forward's own embeddings (B, L, D) (answer positions never hold audio), not embedded a second time."""
        batch = embeds.shape[0]
        a, a_len = pack_rows(info["tokens"], info["mask"], info["sample_index"], batch)  # (B, M, D) clips joined
        t, t_len = pack_rows(embeds.detach(), answer_mask, torch.arange(batch, device=embeds.device), batch)
        return self.sacl(a, row_mask(a_len, a.shape[1]), t, row_mask(t_len, t.shape[1]))

    # -- generation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, audio=None, audio_lengths=None,
                 audio_sample_index=None, instruction_mask=None, encoder_outputs=None,
                 generation_config: GenerationConfig | None = None, ctc_weight: float = 0.0, ctc_candidates: int = 16,
                 ctc_samples: torch.Tensor | None = None, ctc_rescore: bool = True,
                 **generate_kwargs) -> torch.Tensor:
        """Batched generation from left-padded prompts with the KV cache. Returns only the new tokens (B, T_new)
        (or transformers' output object with them as `sequences`, with return_dict_in_generate=True).

        The settings are the model's `generation_config` (greedy, 128 new tokens, ending at EOS or <|im_end|>;
        generation_config.json of a saved folder), then the fields a `generation_config` argument sets, then
        keyword arguments (max_new_tokens, do_sample, num_beams, eos_token_id, ...); the other keywords
        (streamer, logits_processor, stopping_criteria, ...) go to transformers' generate as they are.

        ctc_weight > 0: joint CTC / LLM decoding (usam/joint_decoding.py) of the samples flagged in ctc_samples (B,)
        bool (default all): the LLM's ctc_candidates best next tokens are rescored with the prefix probability of
        what the sample's audio tokens spell. For answers that spell the audio (transcripts, labels); needs the CTC
        head (loss.lambda_ctc > 0). ctc_rescore: then keep, per sample, the better of the decoded answer and the
        audio tokens' greedy CTC spelling under the same joint score (_rescore_with_spelling)."""
        for key in ("labels", "answer_mask", "tasks"):
            generate_kwargs.pop(key, None)
        reading = {k: generate_kwargs.pop(k, None)
                   for k in ("simulated_ids", "simulated_weights", "simulated_sample_index")}
        # (posterior audio tokens: the dropped and merged frames are holes in the attention mask, removed before
        # the LLM runs; position ids come from the mask either way)
        embeds, attention_mask, info = self._inputs_embeds(input_ids, attention_mask, instruction_mask, audio,
                                                           audio_lengths, audio_sample_index, encoder_outputs,
                                                           **reading)
        embeds, attention_mask, _ = drop_unattended(embeds, attention_mask)  # the same prompts, fewer positions
        config, generate_kwargs = self._generation_settings(generation_config, generate_kwargs)
        eos = config.eos_token_id
        eos = {eos} if isinstance(eos, int) else set(eos or ())
        joint = self._joint_log_probs(info, input_ids.shape[0], ctc_samples) if ctc_weight > 0 else None
        if joint is not None:
            from usam.joint_decoding import CTCJointLogitsProcessor

            log_probs, _, active = joint
            processor = CTCJointLogitsProcessor(log_probs, active, ctc_weight, eos, blank=log_probs.shape[-1] - 1,
                                                candidates=ctc_candidates, num_beams=config.num_beams or 1)
            generate_kwargs["logits_processor"] = LogitsProcessorList(
                [*generate_kwargs.get("logits_processor", []), processor])
        rescore = joint is not None and ctc_rescore
        wanted_dict = config.return_dict_in_generate
        # rescoring reuses the prompts' KV cache of a one-row-per-sample search instead of a second prompt pass
        reuse_cache = rescore and (config.num_beams or 1) == 1 and (config.num_return_sequences or 1) == 1
        if reuse_cache:
            config.return_dict_in_generate = True
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, generation_config=config,
                                **generate_kwargs)
        if not rescore:
            return out
        new_ids = out if isinstance(out, torch.Tensor) else out.sequences
        cache = getattr(out, "past_key_values", None) if reuse_cache else None
        if not (hasattr(cache, "crop") and hasattr(cache, "batch_select_indices")):
            cache = None  # a cache that cannot be cut back to the prompts: the prompts run again
        # (with return_dict_in_generate, `scores` and the like describe the search's answer, not a spelling kept)
        new_ids = self._rescore_with_spelling(embeds, attention_mask, joint, new_ids, ctc_weight, eos,
                                              config.max_new_tokens, cache)
        if not wanted_dict:
            return new_ids
        out.sequences = new_ids
        return out

    def default_generation_config(self) -> GenerationConfig:
        """Greedy, 128 new tokens, ending at the tokenizer's EOS or ChatML's <|im_end|>, padding with its pad; the
        audio token suppressed where the LLM has an output row for it (a reserved row reused)."""
        eos = {self.tokenizer.eos_token_id}
        if self.tokenizer.convert_tokens_to_ids("<|im_end|>") not in (None, self.tokenizer.unk_token_id):
            eos.add(self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        suppress = [self.audio_token_id] if self._llm_scores_audio_token() else None
        return GenerationConfig(do_sample=False, max_new_tokens=128, pad_token_id=self.tokenizer.pad_token_id,
                                eos_token_id=sorted(i for i in eos if i is not None), suppress_tokens=suppress)

    def _llm_scores_audio_token(self) -> bool:
        """Whether the LLM has an output row for `<|audio|>` (a reserved row reused), so generation must suppress it."""
        return self.audio_token_id < self.llm.get_output_embeddings().weight.shape[0]

    def _generation_settings(self, generation_config, generate_kwargs) -> tuple[GenerationConfig, dict]:
        """(the settings of one generate call: the model's, then the fields the caller's GenerationConfig sets,
        then the keyword arguments that are generation settings; the keyword arguments that are not)."""
        config = copy.deepcopy(self.generation_config)
        if generation_config is not None:
            config.update(**{k: v for k, v in generation_config.to_diff_dict().items() if k != "transformers_version"})
        rest = config.update(**generate_kwargs)
        if self._llm_scores_audio_token():
            # whatever the settings say (a generation_config.json written before the token existed): never write it
            config.suppress_tokens = sorted({*(config.suppress_tokens or ()), self.audio_token_id})
        if not config.do_sample:  # sampling settings of a greedy call would only raise transformers' warnings
            config.temperature = config.top_p = config.top_k = None
        return config, rest

    @torch.no_grad()
    def score_answers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, answers: list[list[int]],
                      audio=None, audio_lengths=None, audio_sample_index=None, instruction_mask=None,
                      encoder_outputs=None, ctc_weight: float = 0.0, max_rows: int = 256, **_unused) -> torch.Tensor:
        """Closed-set scoring: the log-score (B, K) of each of K fixed answers (token ids, each ending with its end
        token) after each left-padded generation prompt, the same for every sample:

            (1 - w) * sum_t log p_LLM(answer_t | prompt, answer_<t)  +  w * log p_CTC(answer without its end)

        which is the score joint decoding (generate's ctc_weight) gives that complete answer, so the best of the
        K is the answer greedy or beam search would reach if it searched the closed set exactly. The prompt runs
        once; its KV cache is repeated K times for the answers (max_rows: about the most prompt x answer rows
        of one pass; larger batches run in several)."""
        if not answers or any(len(a) < 1 for a in answers):
            raise ValueError("score_answers needs at least one answer, each at least one token long")
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        if ctc_weight > 0 and self.ctc is None:
            raise ValueError("ctc_weight > 0 needs the CTC alignment head (loss.lambda_ctc > 0)")
        n_samples, n_answers = input_ids.shape[0], len(answers)
        embeds, attention_mask, info = self._inputs_embeds(input_ids, attention_mask, instruction_mask, audio,
                                                           audio_lengths, audio_sample_index, encoder_outputs)
        if ctc_weight == 1:  # the alignment alone: no LLM pass
            return self._ctc_answer_scores(info, n_samples, answers)
        embeds, attention_mask, _ = drop_unattended(embeds, attention_mask)  # the same prompts, fewer positions
        ids, valid = _padded_token_rows(answers, input_ids.device)
        # samples per LLM pass, so that the repeated KV cache holds about max_rows rows whatever the label set
        per_pass = max(1, max_rows // n_answers)
        score = (self._packed_answer_log_likelihoods if self._takes_custom_masks() else self._answer_log_likelihoods)
        scores = torch.cat([score(embeds[i: i + per_pass], attention_mask[i: i + per_pass], ids, valid)
                            for i in range(0, n_samples, per_pass)])
        if ctc_weight == 0:
            return scores
        return (1 - ctc_weight) * scores + ctc_weight * self._ctc_answer_scores(info, n_samples, answers)

    def _prompt_pass(self, embeds, attention_mask):
        """Left-padded prompts (B, L, D) through the LLM -> (its output, logits of the last position only; its KV
        cache; the position ids (B, L))."""
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        prompt = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                          logits_to_keep=1)
        cache = prompt["cache"] if "cache" in prompt else prompt.past_key_values  # named cache from transformers 5.x
        return prompt, cache, positions

    def _takes_custom_masks(self) -> bool:
        """Whether the LLM's attention takes a custom 4D mask (SDPA and eager do; FlashAttention-2 does not)."""
        return getattr(self.llm.config, "_attn_implementation", None) in ("sdpa", "eager")

    def _packed_answer_log_likelihoods(self, embeds, attention_mask, ids, valid) -> torch.Tensor:
        """What _answer_log_likelihoods gives, with the K answers packed side by side after each prompt instead of
        K copies of its KV cache: the prompt's cache stays (B, L), and one pass reads each answer's tokens but its
        last (whose prediction no score uses), each attending to the prompt and to its own earlier tokens
        through a 4D mask. The demo's 22 labels (1-3 tokens and the end token): 47 positions a sample instead of 22
        rows of 4 (2-core EPYC, 2026-12-06: 8 ten-second music clips 7.3 -> 5.1 s, docs/evaluation.md)."""
        n_samples, n_answers = embeds.shape[0], ids.shape[0]
        device = embeds.device
        prompt, cache, positions = self._prompt_pass(embeds, attention_mask)
        first = prompt.logits[:, -1].float().log_softmax(-1)  # (B, V): each answer's first token
        scores = first[:, ids[:, 0]]  # (B, K)
        fed = valid[:, 1:]  # (K, A - 1): the inputs are each answer's tokens but its last
        if not bool(fed.any()):
            return scores
        owner = torch.arange(n_answers, device=device)[:, None].expand_as(fed)[fed]  # (S,) answer of each input
        depth = torch.arange(fed.shape[1], device=device)[None].expand_as(fed)[fed]  # (S,) its place in the answer
        inputs, targets = ids[:, :-1][fed], ids[:, 1:][fed]  # (S,) an answer's token and the one after it
        # (B, 1, S, L + S): every prompt position the prompt attends, then the same answer's tokens up to this one
        own = (owner[:, None] == owner[None, :]) & (depth[None, :] <= depth[:, None])
        allowed = torch.cat([attention_mask.bool()[:, None, :].expand(-1, len(owner), -1),
                             own[None].expand(n_samples, -1, -1)], 2)[:, None]
        mask = torch.zeros(allowed.shape, dtype=embeds.dtype, device=device)
        mask = mask.masked_fill(~allowed, torch.finfo(embeds.dtype).min)
        steps = positions[:, -1:] + 1 + depth[None]  # (B, S)
        rest = self.llm(input_ids=inputs[None].expand(n_samples, -1), attention_mask=mask, position_ids=steps,
                        use_cache=True, **{_cache_keyword(self.llm): cache}).logits
        token_scores = rest.float().log_softmax(-1).gather(-1, targets[None, :, None].expand(n_samples, -1, 1))[..., 0]
        return scores.index_add(1, owner, token_scores)

    def _answer_log_likelihoods(self, embeds, attention_mask, ids, valid, prompt_cache=None) -> torch.Tensor:
        """Prompts (B, L, D) with their mask (B, L), answers ids / valid (K, A), the same for every prompt, or
        (B, K, A), each prompt its own -> (B, K) sum of log p of the answers' tokens. The prompts run but their
        last position, whose KV cache is repeated per answer; one more pass then reads that position and each
        answer's tokens but its last. prompt_cache: that cache already made (e.g. left by generation), so no
        prompt pass runs."""
        n_samples = embeds.shape[0]
        if ids.dim() == 2:
            ids, valid = ids.expand(n_samples, -1, -1), valid.expand(n_samples, -1, -1)
        n_answers, longest = ids.shape[1], ids.shape[2]
        cache = prompt_cache
        if cache is None:
            _, cache, _ = self._prompt_pass(embeds[:, :-1], attention_mask[:, :-1])
        cache.batch_repeat_interleave(n_answers)  # row b * K + k: sample b, answer k
        ids, valid = ids.reshape(-1, longest), valid.reshape(-1, longest)  # (B*K, A)
        # inputs: the prompt's last position, then each answer's tokens but its last (B*K, A, D)
        inputs = torch.cat([embeds[:, -1:].repeat_interleave(n_answers, 0),
                            self.embed_tokens(ids[:, :-1]).to(embeds.dtype)], 1)
        mask = torch.cat([attention_mask.repeat_interleave(n_answers, 0), valid[:, :-1].to(attention_mask.dtype)], 1)
        last = attention_mask.long().sum(-1, keepdim=True) - 1  # (B, 1) the prompt's last position id
        steps = last.repeat_interleave(n_answers, 0) + torch.arange(longest, device=ids.device)
        logits = self.llm(inputs_embeds=inputs, attention_mask=mask, position_ids=steps, use_cache=True,
                          **{_cache_keyword(self.llm): cache}).logits
        token_scores = logits.float().log_softmax(-1).gather(-1, ids[..., None])[..., 0] * valid
        return token_scores.sum(1).view(n_samples, n_answers)

    def _info_ctc_logits(self, info: dict, table: torch.Tensor) -> torch.Tensor:
        """The CTC head's logits (C, N, V + 1) of the audio path's tokens: those _inputs_embeds kept, else new."""
        kept = info.get("ctc_logits")
        return kept if kept is not None else self.ctc.logits(info["tokens"], table)

    def _ctc_answer_scores(self, info, n_samples: int, answers: list[list[int]]) -> torch.Tensor:
        """(B, K) log p_CTC of each answer's tokens but its last (the end token) over each sample's clips; a sample
        without audio scores 0."""
        from usam.joint_decoding import clip_log_probs, sequence_log_probs

        out = torch.zeros(n_samples, len(answers), device=self.device)
        if info is None:
            return out
        table = self._vocabulary_embeddings()
        blank = table.shape[0]
        log_probs, lengths = clip_log_probs(self._info_ctc_logits(info, table), info["mask"],
                                            info["sample_index"], n_samples, blank=blank)
        scores = sequence_log_probs(log_probs, lengths, [[a[:-1] for a in answers]] * n_samples, blank)
        with_audio = torch.zeros(n_samples, dtype=torch.bool, device=out.device)
        with_audio[info["sample_index"]] = True
        return torch.where(with_audio[:, None], scores, out)

    def _joint_log_probs(self, info, n_samples, samples):
        """Joint decoding's inputs for the prompt's audio (info from _inputs_embeds): (per-sample CTC log-probabilities
        (B, T, V + 1), frame counts (B,), the samples decoded jointly (B,) bool), or None when no flagged sample
        (samples (B,) bool, None: all) has audio."""
        if self.ctc is None:
            raise ValueError("ctc_weight > 0 needs the CTC alignment head (loss.lambda_ctc > 0)")
        from usam.joint_decoding import clip_log_probs

        if info is None:
            return None
        active = torch.ones(n_samples, dtype=torch.bool) if samples is None else samples.bool().cpu()
        with_audio = torch.zeros(n_samples, dtype=torch.bool)
        with_audio[info["sample_index"].cpu()] = True
        active = active & with_audio
        if not bool(active.any()):
            return None
        table = self._vocabulary_embeddings()
        log_probs, lengths = clip_log_probs(self._info_ctc_logits(info, table), info["mask"], info["sample_index"],
                                            n_samples, blank=table.shape[0])
        return log_probs, lengths, active.to(log_probs.device)

    def _rescore_with_spelling(self, embeds, attention_mask, joint, new_ids, weight, end_ids, max_new_tokens,
                               cache=None):
        """Joint decoding's final choice. Each jointly decoded answer (new_ids (B, T_new), rows of joint's active
        samples that ended) is set against what the sample's audio tokens spell on their best CTC path, and both
        are scored as whole answers the way the search scores them, (1 - w) log p_LLM + w log p_CTC (score_answers);
        the better one is kept. A greedy search that the LLM led away from the spelling in its first words cannot
        return to it; here the spelling is heard as a whole (two-pass rescoring, as in WeNet, the other way round).
        Prompts embeds (B, L, D), attention_mask (B, L) as generation read them; cache: the search's KV cache (its
        first L positions are the prompts'), or None. -> new ids (B, T') padded."""
        from usam.joint_decoding import greedy_spellings, sequence_log_probs

        log_probs, lengths, active = joint
        blank = log_probs.shape[-1] - 1
        spellings = greedy_spellings(log_probs, blank)
        rows = new_ids.tolist()
        chosen, pairs = [], []
        for b, row in enumerate(rows):
            end = next((i for i, t in enumerate(row) if t in end_ids), None)
            if not bool(active[b]) or end is None:
                continue
            said, spelt = row[: end + 1], spellings[b] + [row[end]]
            # (a spelling holding an end token would be cut there; a spelling longer than the budget cannot be
            # an answer)
            if spelt != said and len(spelt) <= max_new_tokens and not end_ids & set(spellings[b]):
                chosen.append(b)
                pairs.append((said, spelt))
        if not chosen:
            return new_ids
        index = torch.tensor(chosen, device=embeds.device)
        ids, valid = _padded_token_rows([a for pair in pairs for a in pair], embeds.device)
        ids, valid = ids.view(len(pairs), 2, -1), valid.view(len(pairs), 2, -1)  # (R, 2, A)
        if cache is not None:
            # the prompts but their last position, which the answers' pass reads again (a negative crop removes
            # that many positions in every transformers release; a positive one meant a length before 5.x)
            excess = cache.get_seq_length() - (embeds.shape[1] - 1)
            if excess > 0:
                cache.crop(-excess)
            cache.batch_select_indices(index)
        llm = self._answer_log_likelihoods(embeds[index], attention_mask[index], ids, valid, cache)  # (R, 2)
        ctc = sequence_log_probs(log_probs[index], lengths[index], [[a[:-1] for a in pair] for pair in pairs], blank)
        better = ((1 - weight) * llm + weight * ctc.to(llm.device)).argmax(-1).tolist()
        for b, pair, k in zip(chosen, pairs, better):
            rows[b] = pair[k]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=new_ids.dtype, device=new_ids.device)

    # -- save / load ----------------------------------------------------------------------------------------
    def _saved_state(self, everything: bool = False) -> dict[str, torch.Tensor]:
        """Weights a checkpoint must carry: all non-LLM parts except frozen pretrained encoder weights."""
        keep = {}
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        for key, tensor in self.state_dict().items():
            if key.startswith("llm."):
                continue
            if key.startswith("encoders.") and not everything:
                encoder = self.encoders[key.split(".")[1]]
                if encoder.pretrained and key not in trainable:
                    continue
            keep[key] = tensor.detach().to("cpu").clone().contiguous()  # clone: no shared storage in safetensors
        return keep

    def saved_parameters(self) -> list[nn.Parameter]:
        """The parameters `save_pretrained` reads (ZeRO-3 gathers only these): what `_saved_state` keeps, the LoRA
        weights, and the whole LLM when it is written as a folder (random init or full fine-tuning)."""
        whole_llm = not self.llm_pretrained or self.config.llm.train == "full"
        out = []
        for name, param in self.named_parameters():
            if name.startswith("llm."):
                if whole_llm or "lora_" in name:
                    out.append(param)
            elif not (name.startswith("encoders.") and self.encoders[name.split(".")[1]].pretrained
                      and not param.requires_grad):
                out.append(param)
        return out

    def _base_llm_state(self) -> dict[str, torch.Tensor]:
        """The LLM's weights without LoRA, under the base model's own key names."""
        from peft import PeftModel

        if not isinstance(self.llm, PeftModel):
            return self.llm.state_dict()
        prefix = "base_model.model."
        out = {}
        for key, tensor in self.llm.state_dict().items():
            if "lora_" in key:
                continue
            out[key[len(prefix):].replace(".base_layer.", ".")] = tensor
        return out

    def _save_llm_folder(self, directory: Path, merged: bool) -> None:
        from peft import PeftModel

        target = directory / LLM_DIR
        base = self.llm.get_base_model() if isinstance(self.llm, PeftModel) else self.llm
        if merged and isinstance(self.llm, PeftModel):
            # LoRA folded into the base weights in place and taken out again after the save: no second copy of
            # the LLM (an 8B model would need twice its memory); unmerging subtracts the same product, so the
            # weights come back to within float rounding
            self.llm.merge_adapter()
            try:
                base.save_pretrained(target, state_dict=self._base_llm_state())
            finally:
                self.llm.unmerge_adapter()
        else:
            base.save_pretrained(target, state_dict=self._base_llm_state())
        self.tokenizer.save_pretrained(target)

    def save_pretrained(self, save_directory: str | Path, is_main_process: bool = True, **_unused) -> None:
        """config + non-base weights + LoRA adapter + processor (tokenizer, processor_config.json, chat template) +
        generation_config.json. Base models are referenced, not copied, unless they were randomly initialised or
        fully fine-tuned; export_merged writes a folder with everything. is_main_process False: nothing is written
        (transformers' convention for the other ranks)."""
        from peft import PeftModel

        if not is_main_process:
            return
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(self.config)
        if config.llm.chat_template:  # the text, not a file the folder's users may not have
            config.llm.chat_template = self.tokenizer.chat_template
        if not self.llm_pretrained or config.llm.train == "full":
            self._save_llm_folder(directory, merged=False)
            config.llm.name_or_path, config.llm.architecture, config.llm.gguf_file = LLM_DIR, None, None
            config.llm.tokenizer = LLM_DIR
        if isinstance(self.llm, PeftModel):
            self.llm.save_pretrained(directory / ADAPTER_DIR)
            self._name_adapter_base(directory / ADAPTER_DIR)
        save_file(self._saved_state(), str(directory / WEIGHTS_NAME))
        self._save_common(directory, config)

    def _save_common(self, directory: Path, config: USAMConfig) -> None:
        """What every saved folder holds: config.json (with `architectures`), usam.yaml, generation_config.json and
        the processor's files (tokenizer, processor_config.json, preprocessor_config.json, chat_template.jinja)."""
        from usam.processing import USAMProcessor

        config.architectures = [type(self).__name__]
        # for loading with trust_remote_code=True without `import usam`: a two-line module that imports the installed
        # package's classes (the folder carries no copy of the code)
        config.auto_map = {auto: f"{AUTO_MODULE}.{cls}" for auto, cls in AUTO_CLASSES.items()}
        (directory / f"{AUTO_MODULE}.py").write_text(AUTO_MODULE_TEXT)
        config.save_pretrained(directory)
        config.to_yaml(directory / "usam.yaml")
        self.generation_config.save_pretrained(directory)
        USAMProcessor.from_model(self).save_pretrained(directory)

    def _name_adapter_base(self, adapter_dir: Path) -> None:
        """PEFT records the folder the base LLM was read from (here a resolved cache path on this machine); the
        adapter names the base as the config does (a hub id), so that it loads on another machine."""
        base = self.config.llm.name_or_path
        if not self.llm_pretrained or not base:
            return
        path = adapter_dir / "adapter_config.json"
        settings = json.loads(path.read_text())
        settings["base_model_name_or_path"] = base
        path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")

    def merge_lora_for_inference(self) -> "USAMModel":
        """Fold the LLM's LoRA into its weights, in place (no copy), for generation only: each layer then runs one
        matrix product instead of three. The model can no longer train or save its adapter; a model without
        LoRA is left as it is. Returns self."""
        from peft import PeftModel

        if isinstance(self.llm, PeftModel):
            self.llm = self.llm.merge_and_unload()
        return self

    def export_merged(self, save_directory: str | Path) -> None:
        """A standalone folder: LoRA merged into the LLM, every encoder weight included; no external references."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(self.config)
        if config.llm.chat_template:
            config.llm.chat_template = self.tokenizer.chat_template
        self._save_llm_folder(directory, merged=True)
        config.llm.name_or_path, config.llm.architecture, config.llm.gguf_file = LLM_DIR, None, None
        config.llm.tokenizer, config.llm.train = LLM_DIR, "frozen" if config.llm.train == "lora" else config.llm.train
        for name, encoder in self.encoders.items():
            section = getattr(config, name)
            section.name_or_path, section.architecture = None, encoder.architecture()
        save_file(self._saved_state(everything=True), str(directory / WEIGHTS_NAME))
        self._save_common(directory, config)

    # keywords transformers' Auto classes and pipelines pass along; none changes how a U-SAM folder loads
    _PASSED_ALONG = ("trust_remote_code", "adapter_kwargs", "code_revision", "_from_auto", "_from_pipeline",
                     "_commit_hash")
    # hub keywords: accepted at their defaults only (a folder is read as usam.loading.resolve_path finds it)
    _HUB_DEFAULTS = {"cache_dir": None, "force_download": False, "local_files_only": False, "token": None,
                     "revision": "main", "proxies": None, "subfolder": ""}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *model_args, config: USAMConfig | None = None,
                        dtype=None, attn_implementation: str | None = None, device_map=None,
                        **kwargs) -> "USAMForConditionalGeneration":
        """A saved folder (or a hub id with one). dtype: a torch dtype or its name for every weight ("auto" or None:
        the config's LLM dtype, the rest fp32); attn_implementation: the LLM's attention kernel (sdpa, eager,
        flash_attention_2); device_map: one device for the whole model ("cpu", "cuda:1", a torch.device, or "auto":
        the first GPU when there is one); config: a USAMConfig to use instead of the folder's (AutoModel passes the
        one it read); other keywords: dotted config keys ("llm.train": "frozen"). transformers' hub keywords
        (revision, token, ...) are accepted at their defaults only and refused otherwise (they would be ignored)."""
        if model_args:
            raise TypeError(f"{cls.__name__}.from_pretrained takes one positional argument (the folder), got "
                            f"{1 + len(model_args)}")
        unsupported = sorted(k for k, v in kwargs.items() if k in cls._HUB_DEFAULTS
                             and v not in (cls._HUB_DEFAULTS[k], None))
        if unsupported:
            raise TypeError(f"{cls.__name__}.from_pretrained: {unsupported} not supported; download the folder "
                            "(e.g. huggingface_hub.snapshot_download) and pass its path")
        unknown = sorted(k for k in kwargs if "." not in k and k not in cls._PASSED_ALONG and k not in cls._HUB_DEFAULTS
                         and k != "torch_dtype")
        if unknown:
            raise TypeError(f"{cls.__name__}.from_pretrained: unknown keyword(s) {unknown}; config overrides are "
                            "dotted keys such as 'llm.train'")
        if kwargs.get("torch_dtype") is not None and dtype is None:  # transformers' earlier name
            dtype = kwargs["torch_dtype"]
        overrides = {k: v for k, v in kwargs.items() if "." in k}
        from usam.loading import resolve_path

        directory = Path(pretrained_model_name_or_path)
        if not directory.exists():
            directory = resolve_path(str(pretrained_model_name_or_path), kind="usam")
        if not (directory / "config.json").exists():
            raise FileNotFoundError(f"{directory}: no config.json (not a U-SAM model folder)")
        dtype = _dtype_name(dtype)
        device = _single_device(device_map)
        config = copy.deepcopy(config) if config is not None else USAMConfig.from_pretrained(directory)
        if dtype is not None:
            config.llm.dtype = dtype
        if attn_implementation is not None:
            config.llm.attn_implementation = attn_implementation
        for section in ("llm", "whisper", "beats", "mert"):
            s = getattr(config, section)
            if s.name_or_path and (directory / s.name_or_path).exists():
                s.name_or_path = str(directory / s.name_or_path)
        if config.llm.tokenizer and (directory / config.llm.tokenizer).exists():
            config.llm.tokenizer = str(directory / config.llm.tokenizer)
        for dotted, value in overrides.items():
            section, key = dotted.split(".", 1)
            setattr(getattr(config, section), key, value)
        adapter = directory / ADAPTER_DIR
        model = cls(config, adapter_dir=adapter if adapter.exists() and config.llm.train == "lora" else None,
                    llm_device=device)
        model.load_trained_weights(directory)
        if dtype is not None or device is not None:
            model.to(device=device, dtype=None if dtype is None else getattr(torch, dtype))
        if (directory / GENERATION_CONFIG_NAME).exists():  # folders saved before it was written have none
            model.generation_config = GenerationConfig.from_pretrained(directory)
        return model

    def load_trained_weights(self, directory: str | Path, strict: bool = True) -> list[str]:
        """Load `usam_weights.safetensors` from a saved folder. Strict: every key must exist in this model,
        and every weight that is not a pretrained base must be in the file. Returns the keys loaded."""
        path = Path(directory) / WEIGHTS_NAME
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (not a U-SAM checkpoint folder)")
        state = load_file(str(path))
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            raise KeyError(f"{path}: weights that this model's config does not have: {unexpected[:10]}")
        if strict:
            missing = sorted(set(self._saved_state()) - set(state))
            if missing:
                raise KeyError(f"{path}: weights missing from the checkpoint: {missing[:10]}")
        for key, tensor in state.items():
            if tensor.shape != own[key].shape:
                raise ValueError(f"{path}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(own[key].shape)}")
        self.load_state_dict(state, strict=False)
        return sorted(state)


USAMModel = USAMForConditionalGeneration  # the earlier name, kept for existing code
