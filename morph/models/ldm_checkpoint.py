"""A diffusers SD 1.x pipeline written as one original-layout (LDM) checkpoint, the kind model sites share: to try
single-file loading offline, and for its tests. The key layout is the inverse of what diffusers' from_single_file
reads.

    python -m morph.models.ldm_checkpoint DIR     # DIR/tiny.safetensors, its configs in DIR/tiny/, DIR/single_file.yaml
    morph run DIR/single_file.yaml         # renders the tiny model from the single file
"""

import re
import sys
from pathlib import Path

import yaml

from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
          ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
VAE_ATTENTION = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _swap(rest, pairs):
    for new, old in pairs:
        rest = rest.replace(new, old)
    return rest


def _renamed(key, fixed, rules):
    """`key` by the fixed table, else by the first rule (regex, function of the match) that matches all of it."""
    if key in fixed:
        return fixed[key]
    for pattern, rename in rules:
        if match := re.fullmatch(pattern, key):
            return rename(match)
    raise KeyError(key)


def unet_key(key, config):
    per = config["layers_per_block"] + 1  # LDM blocks per level: the layers, then the down/upsampler

    def block(m):
        side, level, kind, layer, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        index = level * per + layer + (1 if side == "down" else 0)  # input block 0 is conv_in
        part = f"0.{_swap(rest, RESNET)}" if kind == "resnets" else f"1.{rest}"
        return f"{'input' if side == 'down' else 'output'}_blocks.{index}.{part}"

    def upsampler(m):
        attention = "CrossAttn" in config["up_block_types"][int(m[1])]
        return f"output_blocks.{int(m[1]) * per + per - 1}.{2 if attention else 1}.conv.{m[2]}"

    return _renamed(key, DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"], [
        (r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", block),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)",
         lambda m: f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"),
        (r"mid_block\.resnets\.(\d+)\.(.*)", lambda m: f"middle_block.{2 * int(m[1])}.{_swap(m[2], RESNET)}"),
        (r"mid_block\.attentions\.0\.(.*)", lambda m: f"middle_block.1.{m[1]}"),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", upsampler),
    ])


def vae_key(key, config):
    last = len(config["up_block_types"]) - 1  # the decoder numbers its levels the other way round
    shortcut = [("conv_shortcut", "nin_shortcut")]
    return _renamed(key, DIFFUSERS_TO_LDM_MAPPING["vae"], [
        (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
         lambda m: f"encoder.down.{m[1]}.block.{m[2]}.{_swap(m[3], shortcut)}"),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)",
         lambda m: f"encoder.down.{m[1]}.downsample.conv.{m[2]}"),
        (r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)",
         lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.{_swap(m[3], shortcut)}"),
        (r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)",
         lambda m: f"{m[1]}.mid.attn_1.{_swap(m[2], VAE_ATTENTION)}"),
        (r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
         lambda m: f"decoder.up.{last - int(m[1])}.block.{m[2]}.{_swap(m[3], shortcut)}"),
        (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)",
         lambda m: f"decoder.up.{last - int(m[1])}.upsample.conv.{m[2]}"),
    ])


def ldm_checkpoint(pipe) -> dict:
    """{original key: tensor} of the pipeline's UNet, VAE and CLIP text encoder."""
    state = {}
    for key, value in pipe.unet.state_dict().items():
        state["model.diffusion_model." + unet_key(key, pipe.unet.config)] = value.contiguous()
    for key, value in pipe.vae.state_dict().items():
        state["first_stage_model." + vae_key(key, pipe.vae.config)] = value.contiguous()
    for key, value in pipe.text_encoder.state_dict().items():
        state["cond_stage_model.transformer.text_model." + key.removeprefix("text_model.")] = value.contiguous()
    return state


def write_tiny_single_file(folder: Path) -> Path:
    """The tiny SD 1.x model as `folder`/tiny.safetensors, the diffusers folder its configs come from
    (`folder`/tiny), and a walk that renders it (`folder`/single_file.yaml, whose paths are relative to it)."""
    from safetensors.torch import save_file

    from .tiny import build_pipeline

    pipe = build_pipeline()
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder / "tiny")
    save_file(ldm_checkpoint(pipe), str(folder / "tiny.safetensors"))
    config = folder / "single_file.yaml"
    config.write_text(yaml.safe_dump({"model": "tiny.safetensors", "configs_from": "tiny", "device": "cpu",
                                      "prompts": ["a photo of a cat", "a photo of a kitten"], "frames": 12,
                                      "num_inference_steps": 4, "height": 64, "width": 64}, sort_keys=False))
    return config


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m morph.models.ldm_checkpoint DIR")
    from .pipeline import quiet_libraries

    quiet_libraries()  # as morph's commands do: no library loading bars or advice
    written = write_tiny_single_file(Path(sys.argv[1]))
    print(f"wrote {written.parent / 'tiny.safetensors'}; render it with: morph run {written}")
