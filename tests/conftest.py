import os

import pytest
import yaml

from morph.testing import make_lora

# Tests never reach a model hub: an unknown model id must fail at once, not wait on the network.
os.environ["HF_HUB_OFFLINE"] = "1"


def tiny_job(folder, name="job", **overrides):
    """Write a tiny-model job config into `folder` (overridable key by key; None removes a key); return its path."""
    raw = {
        "name": name,
        "model": "tiny",
        "prompts": ["a photo of a cat", "a drawing of a dog in kyoto"],
        "frames": 6,
        "seed": 7,
        "height": 64,
        "width": 64,
        "num_inference_steps": 3,
        "batch_size": 4,
        "device": "cpu",  # the tests assert CPU float32 results; tests/test_gpu.py covers CUDA
        "output": str(folder / "out" / name),
    }
    raw.update(overrides)
    raw = {k: v for k, v in raw.items() if v is not None}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def write_config(tmp_path):
    """Write a tiny-model job config under tmp_path and return its path."""

    def write(name="job", **overrides):
        return tiny_job(tmp_path, name, **overrides)

    return write


@pytest.fixture
def lora_file(tmp_path):
    """make_lora under tmp_path: lora_file(name, **make_lora's keywords) -> its path."""

    def make(name="style", **kwargs):
        return make_lora(tmp_path / f"{name}.safetensors", **kwargs)

    return make
