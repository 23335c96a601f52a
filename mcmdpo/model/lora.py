"""LoRA through peft: adapters on the language model's linear layers; the projector and the vision
tower, when trained, train in full beside them (``modules_to_save``)."""

from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

# Attention and MLP projections of the language model only (the vision tower has its own q/k/v).
LANGUAGE_MODEL_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def apply_lora(
    model: PreTrainedModel,
    rank: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | None,
    train_vision_tower: bool,
    train_projector: bool,
) -> PeftModel:
    modules_to_save = [name for name, on in (("multi_modal_projector", train_projector), ("vision_tower", train_vision_tower)) if on]
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules or LANGUAGE_MODEL_LINEAR,
        modules_to_save=modules_to_save or None,
        bias="none",
    )
    return get_peft_model(model, config)
