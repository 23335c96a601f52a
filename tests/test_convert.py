"""python -m mcmdpo.model.convert --from llava: a tiny checkpoint in the original LLaVA code's
format (written here: LlavaLlamaForCausalLM config with mm_* fields, model.* / lm_head /
model.mm_projector.* / model.vision_tower.vision_tower.* weights in pytorch_model.bin), converted,
gives the logits the original computation gives: its expand2square + CLIP preprocessing, CLIP's
second-to-last layer without the class token, the two-layer GELU projector, and the image
features spliced into the LLaMA input embeddings where the prompt marks the image."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from mcmdpo.model.convert import main
from mcmdpo.model.loading import load_checkpoint
from mcmdpo.tiny.llava import llava
from mcmdpo.tiny.spec import TinyModelSpec

TOWER = "model.vision_tower.vision_tower."
PROMPT = "USER: <image>\nGiven an image and context, generate alt-text for the image.\nContext:\nour new shop ASSISTANT:"


def original_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' module names -> the original code's (written out by hand, not the converter's table)."""
    renamed = {}
    for name, tensor in state.items():
        for current, original in (("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
                                  ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
                                  ("model.vision_tower.", TOWER), ("model.language_model.", "model.")):
            if name.startswith(current):
                name = original + name.removeprefix(current)
                break
        renamed[name] = tensor.clone()
    return renamed


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(source folder, vision tower folder, original state dict, original config) of a tiny LLaVA
    saved as the original code saves it, its vision tower trained (so its weights are there)."""
    root = tmp_path_factory.mktemp("original")
    spec = TinyModelSpec(seed=3)
    processor, model = llava(spec)
    tower = root / "clip"
    CLIPVisionModel(model.config.vision_config).save_pretrained(tower)  # the frozen tower's checkpoint (other weights)
    CLIPImageProcessor(size={"shortest_edge": spec.image_size}, crop_size={"height": spec.image_size, "width": spec.image_size},
                       image_mean=processor.image_processor.image_mean, image_std=processor.image_processor.image_std).save_pretrained(tower)
    source = root / "mcmdpo_original"
    source.mkdir()
    state = original_names(model.state_dict())
    torch.save(state, source / "pytorch_model.bin")
    config = {
        **{key: value for key, value in model.config.text_config.to_dict().items() if key not in ("model_type", "architectures")},
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": spec.vision_hidden_size,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "flat", "image_aspect_ratio": "pad", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right", "unfreeze_mm_vision_tower": True,
    }
    (source / "config.json").write_text(json.dumps(config))
    processor.tokenizer.save_pretrained(source)
    return source, tower, state, config


def expand2square(image: Image.Image, colour: tuple[int, ...]) -> Image.Image:
    """The original's padding: the image centred on a square of the mean colour."""
    side = max(image.size)
    square = Image.new(image.mode, (side, side), colour)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def original_logits(state, config, tower, image, input_ids, image_token_id):
    """The original LlavaLlamaForCausalLM's forward, from its state dict and config."""
    clip_processor = CLIPImageProcessor.from_pretrained(tower)
    colour = tuple(int(x * 255) for x in clip_processor.image_mean)
    pixels = clip_processor(images=expand2square(image, colour), return_tensors="pt").pixel_values
    vision = CLIPVisionModel.from_pretrained(tower)
    vision.load_state_dict({name.removeprefix(TOWER): t for name, t in state.items() if name.startswith(TOWER)})
    features = vision(pixels, output_hidden_states=True).hidden_states[config["mm_vision_select_layer"]][:, 1:]
    features = F.linear(F.gelu(F.linear(features, state["model.mm_projector.0.weight"], state["model.mm_projector.0.bias"])),
                        state["model.mm_projector.2.weight"], state["model.mm_projector.2.bias"])
    language = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k in LlamaConfig().to_dict() and k != "model_type"}))
    language.load_state_dict({name: t for name, t in state.items() if not name.startswith(("model.mm_projector", TOWER))})
    ids = input_ids[0].tolist()
    first = ids.index(image_token_id)
    last = len(ids) - ids[::-1].index(image_token_id)  # the original marks the image once; the features take its place
    embed = language.get_input_embeddings()
    embeds = torch.cat([embed(input_ids[:, :first]), features, embed(input_ids[:, last:])], dim=1)
    return pixels, language(inputs_embeds=embeds).logits


def test_a_converted_checkpoint_gives_the_original_logits(original, synthetic_dir, tmp_path):
    source, tower, state, config = original
    output = tmp_path / "converted"
    assert main(["--from", "llava", str(source), "--output_dir", str(output), "--vision_tower", str(tower)]) == 0
    checkpoint = load_checkpoint(str(output))  # the protocol and template it records
    assert checkpoint.protocol == "pad" and type(checkpoint.model).__name__ == "LlavaForConditionalGeneration"
    image = Image.open(sorted((synthetic_dir / "image").glob("*.png"))[0]).convert("RGB").resize((40, 24))  # not square
    inputs = checkpoint.processor(text=PROMPT, images=image, return_tensors="pt")
    with torch.no_grad():
        ours = checkpoint.model.eval()(**inputs).logits
        pixels, theirs = original_logits(state, config, tower, image, inputs["input_ids"], checkpoint.model.config.image_token_id)
    torch.testing.assert_close(inputs["pixel_values"], pixels)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_a_projector_only_source_over_its_base_model_converts_alike(original, tmp_path):
    """A pre-training stage's folder (config + mm_projector.bin) over the language model and the
    frozen vision tower: the same model as the whole checkpoint with those weights."""
    source, tower, state, config = original
    base = tmp_path / "vicuna"
    language = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k in LlamaConfig().to_dict() and k != "model_type"}))
    language.load_state_dict({name: t for name, t in state.items() if not name.startswith(("model.mm_projector", TOWER))})
    language.save_pretrained(base)
    stage = tmp_path / "pretrain"
    stage.mkdir()
    (stage / "config.json").write_text((source / "config.json").read_text())
    torch.save({n: t for n, t in state.items() if n.startswith("model.mm_projector")}, stage / "mm_projector.bin")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (base / name).write_text((source / name).read_text())
    assert main(["--from", "llava", str(stage), "--output_dir", str(tmp_path / "out"), "--vision_tower", str(tower),
                 "--base_model", str(base)]) == 0
    converted = load_checkpoint(str(tmp_path / "out")).model.state_dict()
    frozen_tower = CLIPVisionModel.from_pretrained(tower).state_dict()
    for name, tensor in converted.items():
        if name.startswith("model.vision_tower."):
            assert torch.equal(tensor, frozen_tower[name.removeprefix("model.vision_tower.")]), name
        else:
            assert torch.equal(tensor, state[original_name_of(name)]), name


def original_name_of(name: str) -> str:
    return next(iter(original_names({name: torch.zeros(0)})))


@pytest.mark.parametrize("change, named", [
    ("drop", "missing model.layers.1.self_attn.q_proj.weight"),
    ("add", "unexpected model.mm_adapter.weight"),
])
def test_a_missing_or_unexpected_weight_is_an_error_naming_it(original, tmp_path, capsys, change, named):
    source, tower, state, _ = original
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_text((source / name).read_text())
    weights = dict(state)
    if change == "drop":
        del weights["model.layers.1.self_attn.q_proj.weight"]
    else:
        weights["model.mm_adapter.weight"] = torch.zeros(2, 2)
    torch.save(weights, broken / "pytorch_model.bin")
    assert main(["--from", "llava", str(broken), "--output_dir", str(tmp_path / "out"), "--vision_tower", str(tower)]) == 2
    error = capsys.readouterr().err
    assert named in error, error
    assert not (tmp_path / "out").exists()


def test_a_source_that_is_no_original_checkpoint_is_refused(original, tmp_path, capsys):
    _, tower, _, _ = original
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"architectures": ["LlavaForConditionalGeneration"]}))
    assert main(["--from", "llava", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "out"), "--vision_tower", str(tower)]) == 2
    assert "not an original LLaVA checkpoint" in capsys.readouterr().err


def test_a_tokenizer_without_the_image_token_gains_it_with_mean_rows():
    """The original's tokenizer marks the image with id -200, not a token: the converter adds
    <image> (as transformers' LLaVA needs), its embedding and head rows the mean of the others."""
    from transformers import PreTrainedTokenizerFast

    from mcmdpo.model.convert import with_image_token
    from mcmdpo.tiny.bpe import train_bpe

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_bpe(300, ["<unk>", "<s>", "</s>"]), unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    size = len(tokenizer)
    torch.manual_seed(0)
    state = {"model.embed_tokens.weight": torch.randn(size, 8), "lm_head.weight": torch.randn(size, 8)}
    before = {name: tensor.clone() for name, tensor in state.items()}
    assert with_image_token(tokenizer, state) == size == tokenizer.convert_tokens_to_ids("<image>")
    assert tokenizer.pad_token == "<unk>"  # the original's v1 recipe pads with <unk>
    for name, rows in state.items():
        assert rows.shape == (size + 1, 8) and torch.equal(rows[:size], before[name])
        torch.testing.assert_close(rows[size], before[name].mean(0))
