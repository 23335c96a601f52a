"""Tree packing (``--sequence_packing tree``, the default): each record's sequences that show the
same image are merged into one row, a prefix tree of their tokens.

The sequences of one (record, image) pair share a prefix: system prompt, image tokens and, per
context, the question; they differ in the context and the response. Stored as a tree, the row
holds every distinct token once, in order, and each token attends to its ancestors only (a 4-D
attention mask) at its depth as position. Every token then sees exactly what it sees in its own
sequence, at the same position, so each sequence's log-probability is the plain step's (up to
float rounding): for MCM-DPO 2 rows per record instead of 8 sequences, the image through the
language model twice instead of 8 times. It is one ordinary forward, so activation
checkpointing, ZeRO-3, LoRA and the reference cache work as with the plain step.

The masks and positions are the ones each model would build for each sequence, as its family
declares them (:class:`~mcmdpo.model.families.ModelFamily`): image tokens that attend to their
whole image both ways (Gemma 3), sliding-window layers with their own mask, 3-D rotary positions
(Qwen) taken from the model itself and moved to each branch's depth past the image. Needs an
attention that takes a 4-D mask (sdpa or eager)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from mcmdpo.data.collate import image_tensors, pad_rows, token_keys
from mcmdpo.data.conversation import IGNORE_INDEX
from mcmdpo.model.families import ModelFamily, family_of_model, unwrap_model
from mcmdpo.preference.batch import INDEX, model_inputs, record_fields
from mcmdpo.preference.layout import Triple
from mcmdpo.preference.losses import sum_per_sequence, token_logps

# Batch keys of the tree (not model inputs) and of the targets each sequence's log-prob sums.
TREE_KEYS = ("tree_mask", "tree_block", "tree_nodes", "target_row", "target_parent", "target_token", "target_sequence", "sequence_length")
# The attention kernels that take a 4-D mask, so a tree (flash-attention's take none).
TREE_MASK_ATTENTION = ("sdpa", "eager")
NOT_TREE_TOKENS = ("attention_mask", "labels")  # per-token keys a tree row does not carry (its mask and targets replace them)


@dataclass
class PrefixTree:
    """The distinct tokens of some sequences, in first-seen order (parents before children)."""

    tokens: dict[str, list[int]]  # per token key (input_ids and any image-token flags)
    parent: list[int]  # -1 for a root
    depth: list[int]
    paths: list[list[int]]  # per sequence: the node of each of its tokens

    @classmethod
    def of(cls, sequences: Sequence[dict[str, Any]], keys: Sequence[str]) -> PrefixTree:
        tree = cls({key: [] for key in keys}, [], [], [])
        children: dict[tuple[int, tuple[int, ...]], int] = {}
        for sequence in sequences:
            node, path = -1, []
            for position in range(len(sequence["input_ids"])):
                token = tuple(int(sequence[key][position]) for key in keys)
                child = children.get((node, token))
                if child is None:
                    child = children[node, token] = len(tree.parent)
                    for key, value in zip(keys, token):
                        tree.tokens[key].append(value)
                    tree.parent.append(node)
                    tree.depth.append(len(path))
                path.append(child)
                node = child
            tree.paths.append(path)
        return tree

    def __len__(self) -> int:
        return len(self.parent)

    def image_blocks(self, flags: list[int]) -> list[int]:
        """Per node, the first node of the run of flagged (image) tokens it belongs to, or -1."""
        blocks: list[int] = []
        for node, parent in enumerate(self.parent):
            if not flags[node]:
                blocks.append(-1)
            else:
                blocks.append(blocks[parent] if parent >= 0 and flags[parent] else node)
        return blocks

    def ancestry(self, length: int) -> torch.Tensor:
        """[length, length] bool: node i may attend to node j (j is i or an ancestor of i).
        Positions past the tree (padding) attend to themselves only."""
        mask = torch.zeros(length, length, dtype=torch.bool)
        for node, parent in enumerate(self.parent):
            if parent >= 0:
                mask[node] = mask[parent]
            mask[node, node] = True
        mask[torch.arange(len(self), length), torch.arange(len(self), length)] = True
        return mask


@dataclass
class TreePackingCollator:
    """Batches :class:`~mcmdpo.preference.dataset.PreferenceDataset` items (sequences in the
    order of ``triples``) as one prefix-tree row per record and image, with the targets that sum
    back to each sequence's log-probability; ``family`` says which image-token flags mark the
    blocks that attend both ways."""

    pad_token_id: int
    image_token_id: int
    triples: tuple[Triple, ...]
    family: ModelFamily

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        groups: dict[int, list[int]] = {}
        for column, triple in enumerate(self.triples):
            groups.setdefault(triple.image, []).append(column)
        keys = [key for key in token_keys(items[0]["sequences"][0]) if key not in NOT_TREE_TOKENS]
        trees, images, targets = [], [], []
        lengths = []
        for record, item in enumerate(items):
            sequences = item["sequences"]
            if len(sequences) != len(self.triples):
                raise ValueError(f"an item holds {len(sequences)} sequences, the layout {len(self.triples)}")
            for columns in groups.values():
                members = [sequences[c] for c in columns]
                tree = PrefixTree.of(members, keys)
                row = len(trees)
                trees.append(tree)
                for column, sequence, path in zip(columns, members, tree.paths):
                    answer = [k for k, label in enumerate(sequence["labels"]) if label != IGNORE_INDEX and k > 0]
                    targets += [(row, path[k - 1], sequence["input_ids"][k], record * len(self.triples) + column) for k in answer]
                # The image once per run of its tokens in the row: once, as every template we ship puts the image
                # before the context; a template with text first would repeat it per branch.
                image = {key: value for key, value in members[0].items() if key not in token_keys(members[0])}
                placeholders = members[0]["input_ids"].count(self.image_token_id) if image else 0
                images += [image] * (tree.tokens["input_ids"].count(self.image_token_id) // placeholders if placeholders else 0)
            for column in range(len(self.triples)):
                lengths.append(sum(label != IGNORE_INDEX for label in sequences[column]["labels"][1:]))
        length = max(len(tree) for tree in trees)
        batch = {key: pad_rows([tree.tokens[key] for tree in trees], self.pad_token_id if key == "input_ids" else 0) for key in keys}
        batch["position_ids"] = pad_rows([tree.depth for tree in trees], 0)
        batch["tree_nodes"] = torch.tensor([len(tree) for tree in trees])
        batch["tree_mask"] = torch.stack([tree.ancestry(length) for tree in trees])
        if self.family.image_attention == "bidirectional":
            flags = self.family.inputs.token_type_key
            batch["tree_block"] = pad_rows([tree.image_blocks(tree.tokens[flags]) for tree in trees], -1)
        # [4, targets]: row, parent node, token and sequence of each answer token (none if every answer was cut).
        columns = torch.tensor(targets, dtype=torch.long).T if targets else torch.zeros(4, 0, dtype=torch.long)
        batch.update(
            target_row=columns[0], target_parent=columns[1], target_token=columns[2], target_sequence=columns[3],
            sequence_length=torch.tensor(lengths),
        )
        return {**batch, **image_tensors(images), **record_fields(items)}


def tree_attention_mask(batch: dict[str, torch.Tensor], model: nn.Module) -> torch.Tensor | dict[str, torch.Tensor]:
    """The 4-D mask(s) the attention takes, as the model would build them for each sequence:
    ancestors only (the causal mask of a tree); where the family's image attention is
    bidirectional (the collator then marks image blocks) also every token of the same image both
    ways; for sliding-window layers only ancestors less than the window deep above. Boolean
    for sdpa (True = attend), additive for eager; one per layer type where there are several."""
    allowed = batch["tree_mask"]
    if "tree_block" in batch:
        block = batch["tree_block"]
        allowed = allowed | ((block[:, :, None] == block[:, None, :]) & (block[:, :, None] >= 0))
    config = unwrap_model(model).config
    text_config = config.get_text_config()
    masks = {"full_attention": allowed}
    if "sliding_attention" in (getattr(text_config, "layer_types", None) or ()):
        depth = batch["position_ids"]
        masks["sliding_attention"] = allowed & (depth[:, :, None] - depth[:, None, :] < text_config.sliding_window)
    implementation = getattr(text_config, "_attn_implementation", None) or config._attn_implementation
    if implementation not in TREE_MASK_ATTENTION:
        raise ValueError(f"the tree-packed step needs sdpa or eager attention (a 4-D mask), not {implementation}: use --sequence_packing none")
    for name, mask in masks.items():
        mask = mask[:, None]
        if implementation == "eager":
            mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(~mask, torch.finfo(torch.float32).min)
        masks[name] = mask
    return masks if len(masks) > 1 else masks["full_attention"]


def tree_positions(batch: dict[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
    """Each node's position as in its own sequences: its depth; for families with multimodal
    rotary positions (3-D (time, height, width) positions, which the model derives from a linear
    row with its ``get_rope_index``), the model's own positions of the row read linearly, moved to
    the depth of every node past the image. Exact where the image precedes everything the
    sequences differ in (there depth and index agree, so the image's grid positions are the
    linear ones)."""
    depth = batch["position_ids"]
    family = family_of_model(model)
    if family.positions != "multimodal_rope":
        return depth
    flags = family.inputs.token_type_key
    index = torch.arange(depth.shape[1], device=depth.device)[None]
    real = index < batch["tree_nodes"][:, None]
    image = (batch[flags] != 0) & real
    if (depth != index)[image].any():
        raise ValueError("the tree-packed step needs the image before the contexts differ (3-D positions): use --sequence_packing none")
    grids = {key: batch[key] for key in family.inputs.keys if key != "pixel_values"}  # e.g. the image grids
    base = unwrap_model(model).model
    linear, _ = base.get_rope_index(batch["input_ids"], attention_mask=real.long(), **{flags: batch[flags]}, **grids)
    return linear + (depth - index).masked_fill(~real, 0)[None]


def packed_sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor], average: bool = False) -> torch.Tensor:
    """[records, sequences] log-probs (columns: the layout's triples) from a
    :class:`TreePackingCollator` batch, in one forward. Only the tree nodes that predict an answer
    token go through the output head."""
    inputs = model_inputs(batch, *TREE_KEYS)
    inputs["position_ids"] = tree_positions(batch, model)
    row, parent = batch["target_row"], batch["target_parent"]
    predicts_answer = torch.zeros(batch["input_ids"].shape, dtype=torch.bool, device=row.device)
    predicts_answer[row, parent] = True
    kept = predicts_answer.view(-1).cumsum(0) - 1  # index of each kept position among the kept ones
    logits = model(
        **inputs, attention_mask=tree_attention_mask(batch, model), use_cache=False, logits_to_keep=predicts_answer
    ).logits
    width = predicts_answer.shape[1]
    values = token_logps(logits, batch["target_token"], kept[row * width + parent])
    lengths = batch["sequence_length"]
    return sum_per_sequence(values, batch["target_sequence"], lengths, average).view(len(batch[INDEX]), -1)
