"""A tiny, randomly initialised Stable Diffusion pipeline built in code, for tests and benchmarks.

Nothing is downloaded: the tokenizer's vocabulary is written here (the byte-level alphabet and no
merges), the text encoder, UNet and VAE get small random weights from a fixed seed. The result is
saved with ``save_pretrained`` in the ordinary diffusers folder layout, so the studio loads it through
exactly the code path it uses for a real model (``AutoPipelineForText2Image.from_pretrained``).

The pictures are noise, but they are deterministic noise: the same seed gives the same pixels.
The VAE downsamples by 8 like the real one, so a 256x256 image is a 32x32 latent and two steps take
a fraction of a second on a CPU.

    python -m tests.tiny_model OUT_DIR [small]  # build it from the command line (the benchmarks do)

``build_sdxl_pipeline`` / ``save_tiny_sdxl_model`` do the same for a tiny Stable Diffusion XL model
(two text encoders, the size/crop conditioning), whose pipelines return no safety-checker field.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SEED = 1234
SINGLE_FILE_NAME = "tiny-sd.safetensors"  # the same weights as one LDM-style checkpoint, next to the folder's files


def _byte_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE uses to stand for the bytes 0-255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tokenizer_files(folder: Path) -> None:
    """A CLIP-style vocab.json and merges.txt: every byte alone and at a word's end, no merges.

    Words tokenize to one token per character, which is all a random text encoder needs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for char in _byte_alphabet():
        vocab[char] = len(vocab)
    for char in _byte_alphabet():
        vocab[char + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


# Sizes of the random models. "tiny" is for tests; "small" (about 40 M parameters, the SD 1.x block
# layout at a fraction of its width) gives benchmarks work heavy enough that overheads are measured
# against something like a real model rather than against nothing.
PRESETS = {
    "tiny": {"unet": (32, 64), "unet_layers": 1, "width": 32, "heads": 4, "text_layers": 2},
    "small": {"unet": (64, 128, 256, 256), "unet_layers": 2, "width": 256, "heads": 8, "text_layers": 4},
}


def build_pipeline(max_length: int = 32, preset: str = "tiny"):
    """The tiny (or "small") random StableDiffusionPipeline, in memory."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        write_tokenizer_files(Path(scratch))
        tokenizer = CLIPTokenizer.from_pretrained(scratch, model_max_length=max_length)

    size = PRESETS[preset]
    width = size["width"]
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=size["text_layers"], num_attention_heads=size["heads"],
        max_position_embeddings=max_length, projection_dim=width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    blocks = len(size["unet"])
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=size["unet_layers"],
        block_out_channels=size["unet"], norm_num_groups=32,
        # Like SD 1.x: cross-attention in every block but the deepest.
        down_block_types=("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1),
        cross_attention_dim=width, attention_head_dim=8,
    )
    # Four blocks, so the VAE scales by 8 like the real one; tiny channels keep it fast.
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=256,
        block_out_channels=(8, 8, 16, 16), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing",
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_sdxl_pipeline(max_length: int = 32):
    """A tiny random StableDiffusionXLPipeline, in memory: SDXL's two text encoders (the second with a
    projection, whose pooled output and the size/crop "time ids" condition the UNet through its
    ``text_time`` embedding), cross-attention over both encoders' features side by side."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        write_tokenizer_files(Path(scratch))
        tokenizer = CLIPTokenizer.from_pretrained(scratch, model_max_length=max_length)
        tokenizer_2 = CLIPTokenizer.from_pretrained(scratch, model_max_length=max_length)

    torch.manual_seed(SEED)
    width, time_embed = 32, 8

    def text_config() -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=max_length, projection_dim=width,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)

    text_encoder = CLIPTextModel(text_config())
    text_encoder_2 = CLIPTextModelWithProjection(text_config())
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        norm_num_groups=32, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        transformer_layers_per_block=(1, 1), cross_attention_dim=2 * width,
        # SDXL's extra conditioning: 6 size/crop numbers embedded at ``time_embed`` each, plus the pooled text.
        addition_embed_type="text_time", addition_time_embed_dim=time_embed,
        projection_class_embeddings_input_dim=6 * time_embed + width,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=256,
        block_out_channels=(8, 8, 16, 16), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing",
        steps_offset=1,
    )
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )


def save_tiny_sdxl_model(folder: str | Path) -> Path:
    """Build the tiny SDXL model and save it under ``folder`` in the diffusers layout. Returns the folder."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        build_sdxl_pipeline().save_pretrained(folder, safe_serialization=True)
    return folder


# -- a single-file checkpoint ----------------------------------------------------------------
# Checkpoints shared as one .safetensors file use the original Stable Diffusion ("LDM") key names.
# diffusers converts LDM names to its own when loading; to test that path we need the opposite
# direction, written out here for the block layout of an SD 1.x-style model. The test that loads the
# file back and gets the very same pixels as the folder proves the renaming.

_RESNET_LDM_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                     "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION_LDM_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_first(rest: str, names: dict[str, str]) -> str:
    for new, old in names.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def _unet_key_to_ldm(key: str, per_block: int, up_blocks_with_attention: set[int]) -> str:
    import re

    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    if key in top:
        return top[key]
    span = per_block + 1  # LDM counts a block's layers plus its down/upsampler
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * span + layer
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_rename_first(rest, _RESNET_LDM_NAMES)}"
        return f"input_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * span + per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename_first(m[2], _RESNET_LDM_NAMES)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * span + layer
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_rename_first(rest, _RESNET_LDM_NAMES)}"
        return f"output_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        slot = 2 if block in up_blocks_with_attention else 1
        return f"output_blocks.{block * span + per_block}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet key {key}")


def _vae_key_to_ldm(key: str, num_up_blocks: int) -> str:
    import re

    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    if key in top:
        return top[key]
    shortcut = {"conv_shortcut": "nin_shortcut"}
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_rename_first(m[3], shortcut)}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{num_up_blocks - 1 - int(m[1])}.block.{m[2]}.{_rename_first(m[3], shortcut)}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{num_up_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename_first(m[3], shortcut)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m[1]}.mid.attn_1.{_rename_first(m[2], _VAE_ATTENTION_LDM_NAMES)}"
    raise KeyError(f"no LDM name for VAE key {key}")


def save_single_file(pipe, path: str | Path) -> Path:
    """Write ``pipe``'s UNet, VAE and text encoder as one LDM-style .safetensors checkpoint."""
    from safetensors.torch import save_file

    path = Path(path)
    per_block = pipe.unet.config.layers_per_block
    with_attention = {i for i, kind in enumerate(pipe.unet.config.up_block_types) if "CrossAttn" in kind}
    tensors = {}
    for key, value in pipe.unet.state_dict().items():
        tensors["model.diffusion_model." + _unet_key_to_ldm(key, per_block, with_attention)] = value
    num_up = len(pipe.vae.config.up_block_types)
    for key, value in pipe.vae.state_dict().items():
        if ".mid_block.attentions." in key and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions, diffusers linears
        tensors["first_stage_model." + _vae_key_to_ldm(key, num_up)] = value
    for key, value in pipe.text_encoder.state_dict().items():
        # LDM files name the CLIP weights "...transformer.text_model.*" (newer transformers drop the prefix).
        key = key if key.startswith("text_model.") else "text_model." + key
        tensors["cond_stage_model.transformer." + key] = value
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def save_tiny_model(folder: str | Path, preset: str = "tiny") -> Path:
    """Build the tiny model and save it under ``folder``: the diffusers layout, plus the same weights as
    a single-file checkpoint ``folder / SINGLE_FILE_NAME``. Returns the folder."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return folder
    pipe = build_pipeline(preset=preset)
    pipe.save_pretrained(folder, safe_serialization=True)
    save_single_file(pipe, folder / SINGLE_FILE_NAME)
    return folder


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in PRESETS):
        sys.exit(f"usage: python -m tests.tiny_model OUT_DIR [{'|'.join(PRESETS)}]")
    print(save_tiny_model(sys.argv[1], *sys.argv[2:]))
