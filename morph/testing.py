"""Helpers for your own test suite: golden-frame checks, and small LoRAs, ControlNets and IP-Adapters to test walks
with.

    from morph.testing import assert_matches_golden

    def test_cat_kitten_still_renders_the_same():
        assert_matches_golden("configs/cat_kitten.yaml")
"""

from pathlib import Path

from .config.yaml_file import load_config
from .golden import check_golden, format_table, golden_dir


def assert_matches_golden(config_path: str | Path, tolerance: str | None = None, directory: str | Path | None = None,
                          **overrides) -> None:
    """Re-render a job's golden frames; raise AssertionError with the comparison table if any regressed.

    `tolerance` is a preset name (exact, same-device, cross-device); by default it is chosen from
    the config's golden: section or the environments compared. `overrides` replace config keys
    (e.g. model="tiny"). A config that differs from the goldens' raises MorphError.
    """
    config = load_config(config_path, **overrides)
    result = check_golden(config, golden_dir(config, directory), preset=tolerance)
    if not result.passed:
        notes = "".join(f"\n  note: {n}" for n in result.notes)
        raise AssertionError(f"{config.name}: frames moved beyond the {result.tolerance.name} tolerance "
                             f"(report: {result.report_dir}){notes}\n{format_table(result)}")


_ATTENTION = {"unet": ["to_q", "to_k", "to_v", "to_out.0"], "text": ["q_proj", "k_proj", "v_proj", "out_proj"]}
_CONVOLUTIONS = ["conv1", "conv2"]  # each ResNet block's two 3x3 convolutions


def make_lora(path, model: str = "tiny", parts=("unet", "text_encoder"), layout: str = "diffusers", seed: int = 0,
              rank: int = 4, convolutions: bool = False):
    """Write a LoRA for a built-in tiny model (or the toy) to `path` and return it: made with peft on the attention
    layers of `parts` (unet, text_encoder, text_encoder_2), and with `convolutions` on the UNet's ResNet convolutions
    too (as LoCon LoRAs are), its A and B matrices random so that it changes the picture, saved in diffusers' key
    layout (unet.…lora_A.weight) or kohya's (lora_unet_…lora_down.weight, with an .alpha)."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from .models.pipeline import load_model
    from .models.tiny import BUILT_IN

    pipe = BUILT_IN[model]() if model in BUILT_IN else load_model(model, torch.device("cpu"), torch.float32, None,
                                                                  False).pipe
    torch.manual_seed(seed)
    state = {}
    for part in parts:
        targets = _ATTENTION["unet" if part == "unet" else "text"] + (_CONVOLUTIONS if part == "unet" and convolutions
                                                                      else [])
        module = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets,
                                                    init_lora_weights=False), getattr(pipe, part))
        state.update({f"{part}.{k}": v.contiguous() for k, v in get_peft_model_state_dict(module).items()})
    if layout == "kohya":
        first = "lora_te1_" if "text_encoder_2" in parts else "lora_te_"
        prefixes = {"unet": "lora_unet_", "text_encoder": f"{first}text_model_",
                    "text_encoder_2": "lora_te2_text_model_"}
        kohya = {}
        for key, value in state.items():
            part, rest = key.split(".", 1)
            layer, matrix = rest.rsplit(".lora_", 1)
            name = prefixes[part] + layer.replace(".", "_")
            kohya[f"{name}.lora_{'down' if matrix.startswith('A') else 'up'}.weight"] = value
            kohya[f"{name}.alpha"] = torch.tensor(float(rank))
        state = kohya
    save_file(state, str(path))
    return path


def make_controlnet(path, model: str = "tiny", layout: str = "folder", seed: int = 0, spread: float = 0.2):
    """Write a ControlNet for a built-in tiny model (or the toy) to `path` and return it: diffusers' from_unet copy of
    the model's UNet, its zero convolutions (which make a fresh ControlNet change nothing) drawn at random with
    standard deviation `spread` so that it changes the picture, saved in diffusers' layout as a folder (config.json
    and its weights) or as one .safetensors file (layout: file)."""
    import torch
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from .models.pipeline import load_model
    from .models.tiny import BUILT_IN

    pipe = BUILT_IN[model]() if model in BUILT_IN else load_model(model, torch.device("cpu"), torch.float32, None,
                                                                  False).pipe
    net = ControlNetModel.from_unet(pipe.unet)
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        zeroed = [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]
        for conv in zeroed:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * spread)
    if layout == "file":
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    else:
        net.save_pretrained(str(path))
    return path


def make_ip_adapter(folder, model: str = "tiny", seed: int = 0, embed_width: int = 16):
    """Write a random IP-Adapter for a built-in tiny model to `folder` in diffusers' layout and return the folder:
    ip-adapter.safetensors (image_proj.proj/norm and ip_adapter.N.to_k_ip/to_v_ip for each cross-attention layer,
    numbered as diffusers' load_ip_adapter reads them) beside image_encoder/, a small random
    CLIPVisionModelWithProjection that embeds 32 x 32 pictures in `embed_width` channels."""
    from pathlib import Path

    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from .models.tiny import BUILT_IN

    folder = Path(folder)
    unet = BUILT_IN[model]().unet
    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, projection_dim=embed_width, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8))
    encoder.save_pretrained(folder / "image_encoder")
    cross = unet.config.cross_attention_dim
    state = {"image_proj.proj.weight": torch.randn(4 * cross, embed_width) / embed_width ** 0.5,
             "image_proj.proj.bias": torch.randn(4 * cross) * 0.1,
             "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    layers = [name.removesuffix(".processor") for name in unet.attn_processors if name.endswith("attn2.processor")]
    # numbered 1, 3, 5, ...: the original repository counted self- and cross-attention layers together
    for number, layer in zip(range(1, 2 * len(layers), 2), layers):
        width = unet.get_submodule(layer).to_k.out_features
        for projection in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{number}.{projection}.weight"] = torch.randn(width, cross) / cross ** 0.5
    save_file(state, str(folder / "ip-adapter.safetensors"))
    return folder
