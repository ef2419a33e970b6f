"""The half precision CUDA users render in, on the CPU: every input that walks per frame (a LoRA's strength, guidance,
negative prompts), a few-step walk without CFG and SDXL with a LoRA render in float16 (and the LoRA walk in bfloat16)
within the cross-device preset of the same job in float32. A tensor left in float32 beside half weights fails here,
on any machine, instead of first on a user's GPU."""

import pytest
from test_gpu import assert_within, frames_of  # its own tests need CUDA; these two helpers do not

from morph.config.yaml_file import load_config
from morph.job import run_job

FRAMES = 4


def walks(lora: str) -> dict:
    style = [{"path": lora, "name": "style"}]
    return {
        "lora": {"loras": style, "prompts": [{"prompt": "a red circle", "loras": {"style": 0}},
                                             {"prompt": "a blue square", "loras": {"style": 1.5}}]},
        "guidance": {"prompts": [{"prompt": "a red circle", "guidance_scale": 3},
                                 {"prompt": "a blue square", "guidance_scale": 7}]},
        "negative": {"prompts": [{"prompt": "a red circle", "negative_prompt": "blue"},
                                 {"prompt": "a blue square", "negative_prompt": "red"}]},
        "few-step": {"scheduler": "LCMScheduler", "guidance_scale": 1},
        "sdxl-lora": {"model": "tiny-sdxl", "loras": style,
                      "prompts": [{"prompt": "a red circle", "loras": {"style": 0}}, {"prompt": "a blue square"}]},
    }


@pytest.mark.parametrize("walk, dtype", [(walk, "float16") for walk in walks("")] + [("lora", "bfloat16")])
def test_a_walk_renders_in_half_precision_within_the_cross_device_preset_of_float32(write_config, lora_file, walk,
                                                                                    dtype):
    xl = walk.startswith("sdxl")  # a LoCon LoRA on SD's convolutions too; SDXL's on its UNet and both encoders
    lora = lora_file(model="tiny-sdxl", parts=("unet", "text_encoder", "text_encoder_2")) if xl else \
        lora_file(convolutions=True)
    keys = walks(str(lora))[walk]
    full = load_config(write_config(name="full", frames=FRAMES, **keys))
    half = load_config(write_config(name="half", frames=FRAMES, dtype=dtype, **keys))
    run_job(full, quiet=True)
    manifest = run_job(half, quiet=True)
    assert manifest["dtype"] == dtype and manifest["broken_frames"] == [] and manifest["redecoded_float32"] == []
    assert_within("cross-device", frames_of(full, FRAMES), frames_of(half, FRAMES))
