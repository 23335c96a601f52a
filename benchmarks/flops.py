"""Analytic FLOPs of one MCM-DPO record under each step, for a model shape and a token profile:
what the timings of bench_mcmdpo_step.py should be compared with, and the same count at the
real 7B shape (LLaVA-1.5/1.6-7B: Vicuna-7B on CLIP ViT-L/14-336), where no CPU can time it.

Conventions (matrix multiplies only; norms, rotary and activations are noise at these shapes):
- a forward pass counts 1, its backward 2, the recomputation under activation checkpointing 1
  more (encoder and decoder layers; the output head is not recomputed), a no-grad reference
  forward 1; one multiply-add is 2 FLOPs;
- attention's quadratic part (scores and weighted values) counts the full square of each tree row
  (its mask has no block structure a kernel could skip) and, for full sequences, either the
  causal half (``attention="causal"``: what flash-attention's causal kernels compute, the count
  least favourable to the packed step; used at the 7B shape) or the full square
  (``attention="dense"``: what sdpa computes when the batch carries a padding mask, as every
  batch of the benchmark does);
- the upstream-style step puts every position through the output head (as the original does),
  ours only the positions that predict an answer token (``logits_to_keep``);
- the vision tower runs once per image tile and trains (the original's paradigm (d)); the
  projector maps each image token.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SEQUENCES = 8  # MCM-DPO: 2 contexts x 2 images x 2 responses per record
IMAGES = 2  # m_w and m_l
CONTEXTS = 2  # c_w and c_l


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    vision_hidden: int
    vision_layers: int
    vision_intermediate: int
    vision_tokens: int  # per tile, the class token included

    @property
    def layer_macs(self) -> int:
        """Multiply-adds of one decoder layer's projections per token: q, k, v, o and a gated MLP."""
        return 4 * self.hidden**2 + 3 * self.hidden * self.intermediate

    @property
    def decoder_macs(self) -> int:
        return self.layers * self.layer_macs

    @property
    def head_macs(self) -> int:
        return self.hidden * self.vocab

    def attention_macs(self, queries: int, keys: int) -> int:
        """Scores and weighted values of ``queries`` x ``keys`` pairs, all layers."""
        return self.layers * 2 * self.hidden * queries * keys

    @property
    def tile_macs(self) -> int:
        """One tile through the vision tower: its projections and its (bidirectional) attention."""
        v, n = self.vision_hidden, self.vision_tokens
        return self.vision_layers * (n * (4 * v * v + 2 * v * self.vision_intermediate) + 2 * v * n * n)

    @property
    def projector_macs(self) -> int:
        """The two-layer projector, per image token."""
        return self.vision_hidden * self.hidden + self.hidden**2


@dataclass(frozen=True)
class RecordShape:
    """Token counts of one record's sequences: ``prefix`` (system prompt, template and image
    tokens: what all sequences of one image share), each ``context`` (question and the template
    up to the answer), each ``answer`` (its end-of-turn token included)."""

    prefix: int
    image_tokens: int
    tiles: int  # vision-tower passes per image
    context: int
    answer: int

    @property
    def sequence(self) -> int:
        return self.prefix + self.context + self.answer

    @property
    def tree_row(self) -> int:
        """One image's prefix tree: the prefix once, each context once, each answer under each context."""
        return self.prefix + CONTEXTS * (self.context + 2 * self.answer)


# Vicuna-7B (LLaMA-2 shape) on CLIP ViT-L/14 at 336 pixels: 24 x 24 patches and a class token.
LLAVA_7B = ModelShape(hidden=4096, layers=32, intermediate=11008, vocab=32000,
                      vision_hidden=1024, vision_layers=24, vision_intermediate=4096, vision_tokens=577)


def llava_7b_record(image_tokens: int, tiles: int, system: int = 35, context: int = 100, answer: int = 30) -> RecordShape:
    """A real record at the 7B shape: the Vicuna system prompt (~35 tokens), ~100-token contexts,
    ~30-token answers; "USER:" before the image, ":" and newlines around it (~5 tokens)."""
    return RecordShape(prefix=system + 5 + image_tokens, image_tokens=image_tokens, tiles=tiles, context=context, answer=answer)


def _vision(model: ModelShape, record: RecordShape, images: int, passes: int) -> int:
    return images * passes * (record.tiles * model.tile_macs + record.image_tokens * model.projector_macs)


def _causal_keys(queries: int, earlier: int, attention: str) -> float:
    """Keys per query of ``queries`` tokens after ``earlier`` ones, as the attention kernel visits them."""
    if attention not in ("causal", "dense"):
        raise ValueError(f"attention is counted causal or dense, not {attention!r}")
    return earlier + ((queries + 1) / 2 if attention == "causal" else queries)


def _full_sequences(model: ModelShape, record: RecordShape, passes: int, head_positions: int, attention: str) -> float:
    """``SEQUENCES`` full sequences through the model ``passes`` times; the head over ``head_positions`` per sequence."""
    n = record.sequence
    body = n * model.decoder_macs + model.attention_macs(n, _causal_keys(n, 0, attention))
    head_passes = min(passes, 3)  # the head is not recomputed under checkpointing
    return SEQUENCES * (passes * body + head_passes * head_positions * model.head_macs) + _vision(model, record, SEQUENCES, passes)


def step_flops(model: ModelShape, record: RecordShape, step: str, checkpointing: bool, attention: str = "causal") -> float:
    """FLOPs of one record under ``step``: upstream (8 policy sequences with backward and 8
    reference ones), plain (8 policy sequences, reference cached) or packed (2 tree rows)."""
    trained = 4 if checkpointing else 3
    if step == "upstream":
        return 2 * (_full_sequences(model, record, trained, record.sequence, attention)
                    + _full_sequences(model, record, 1, record.sequence, attention))
    if step == "plain":
        return 2 * _full_sequences(model, record, trained, record.answer, attention)
    if step == "packed":
        n = record.tree_row
        row = n * model.decoder_macs + model.attention_macs(n, n)
        head = SEQUENCES * record.answer * model.head_macs
        return 2 * (IMAGES * trained * row + 3 * head + _vision(model, record, IMAGES, trained))
    raise ValueError(f"unknown step {step!r}")


def shares(model: ModelShape, record: RecordShape) -> dict[str, float]:
    """Where a forward of one full sequence spends its FLOPs: what the benchmark model must share
    with the 7B for the measured ratios to mean something."""
    n = record.sequence
    decoder = n * model.decoder_macs
    attention = model.attention_macs(n, (n + 1) / 2)
    head = n * model.head_macs
    vision = record.tiles * model.tile_macs + record.image_tokens * model.projector_macs
    total = decoder + attention + head + vision
    return {
        "head / decoder projections": head / decoder,
        "attention projections / decoder projections": model.layers * 4 * model.hidden**2 / model.decoder_macs,
        "attention scores / decoder projections": attention / decoder,
        "vision (tower + projector) / language model on the image tokens": vision
        / (record.image_tokens * (model.decoder_macs + model.head_macs) + model.attention_macs(record.image_tokens, n / 2)),
        "vision share of the sequence": vision / total,
    }


def ratios(model: ModelShape, record: RecordShape, checkpointing: bool, attention: str = "causal") -> dict[str, float]:
    """Upstream-style FLOPs over each step's (the speedup a FLOP-bound machine would see)."""
    upstream = step_flops(model, record, "upstream", checkpointing, attention)
    return {step: upstream / step_flops(model, record, step, checkpointing, attention) for step in ("plain", "packed")}


def at_image_tokens(record: RecordShape, image_tokens: int, tiles: int) -> RecordShape:
    return replace(record, prefix=record.prefix - record.image_tokens + image_tokens, image_tokens=image_tokens, tiles=tiles)


# ---------------------------------------------------------------- generation (the builder's sampling)
#
# One candidate written by ``generate`` with a KV cache: its image through the vision tower and the
# projector, one prefill pass over the prompt's P tokens (the image tokens included) that yields
# the first new token (the head on that last position only), then T - 1 decode passes of one token
# each, the step writing token t + 1 attending to P + t keys (causal). Multiply-adds, as above.

def candidate_macs(model: ModelShape, prompt: int, image_tokens: int, tiles: int, new_tokens: int) -> dict[str, float]:
    """Multiply-adds of one candidate of ``new_tokens`` tokens after a ``prompt``-token prompt:
    ``vision``, ``prefill`` and ``decode`` (all decode steps), and ``decode_step`` (the mean one)."""
    vision = tiles * model.tile_macs + image_tokens * model.projector_macs
    prefill = prompt * model.decoder_macs + model.attention_macs(prompt, (prompt + 1) / 2) + model.head_macs
    steps = max(new_tokens - 1, 0)
    keys = steps * prompt + steps * (steps + 1) / 2  # sum of P + t over t = 1 .. T - 1
    decode = steps * (model.decoder_macs + model.head_macs) + model.layers * 2 * model.hidden * keys
    return {"vision": vision, "prefill": prefill, "decode": decode, "decode_step": decode / steps if steps else 0.0}


def candidate_flops(model: ModelShape, prompt: int, image_tokens: int, tiles: int, new_tokens: int) -> float:
    """FLOPs of one candidate (2 per multiply-add): vision + prefill + decode."""
    macs = candidate_macs(model, prompt, image_tokens, tiles, new_tokens)
    return 2 * (macs["vision"] + macs["prefill"] + macs["decode"])


def language_weights(model: ModelShape) -> int:
    """Weights a decode step reads: the decoder layers' projections and the output head (the
    embedding lookup reads one row a token; norms are noise)."""
    return model.decoder_macs + model.head_macs


def kv_cache_values(model: ModelShape, tokens: float) -> float:
    """Values in the KV cache of one sequence of ``tokens`` tokens (keys and values, every layer,
    full-width heads as LLaMA-2-7B's)."""
    return 2 * model.layers * model.hidden * tokens


if __name__ == "__main__":
    for tokens, tiles in ((576, 1), (2340, 5)):
        record = llava_7b_record(tokens, tiles)
        print(f"7B, {tokens} image tokens ({tiles} tiles): sequence {record.sequence}, tree row {record.tree_row}")
        for name, value in shares(LLAVA_7B, record).items():
            print(f"  {name}: {value:.3f}")
        for checkpointing in (True, False):
            print(f"  checkpointing {'on ' if checkpointing else 'off'}:",
                  ", ".join(f"{k} {v:.2f}x" for k, v in ratios(LLAVA_7B, record, checkpointing).items()))
