"""How long the studio's Preview takes on the toy model, as a script sees it through the /preview endpoint.

    python benchmarks/studio_preview.py [--rounds 3]      # about a minute on 2 cores

A studio is started on a new folder without its warm-up and asked one preview (the libraries load then); another
is started as `morph studio` starts (its warm-up previews the opening walk) and, once warmed, gradio_client asks
/preview of the toy demo's walk: once, then --rounds times with a new seed each (every frame rendered again), and
once more unchanged (every frame from the preview's frame store). It prints the seconds of each. Run it with nothing else on the machine: on 2 cores another process can slow torch
severalfold.
"""

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from morph.studio.page import serve

WALK = {"name": "toy_demo", "model": "toy", "prompts": ["a red circle", "a blue square", "a green triangle"],
        "frames": 120, "seed": 3, "num_inference_steps": 25, "guidance_scale": 5.0, "device": "cpu"}
WARM_UP_WAIT_S = 120


def timed(client, walk: dict) -> float:
    started = time.perf_counter()
    client.predict(yaml.safe_dump(walk), api_name="/preview")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as root:
        studio, url = serve(Path(root), port=None, block=False, warm=False)
        try:
            cold = timed(Client(url, verbose=False, download_files=str(Path(root) / "downloads")), WALK)
        finally:
            studio.close()
    with tempfile.TemporaryDirectory() as root:
        studio, url = serve(Path(root), port=None, block=False)
        try:
            studio.warmed.wait(WARM_UP_WAIT_S)
            client = Client(url, verbose=False, download_files=str(Path(root) / "downloads"))
            first = timed(client, WALK)
            changed = [timed(client, {**WALK, "seed": WALK["seed"] + 1 + i}) for i in range(args.rounds)]
            again = timed(client, {**WALK, "seed": WALK["seed"] + args.rounds})
        finally:
            studio.close()
    print("preview of the toy demo (12 frames, 64 x 64, 6 of 25 steps), through /preview on the CPU:")
    print(f"  first, no warm-up:       {cold:.2f} s (the libraries load)")
    print(f"  first after the warm-up: {first:.2f} s")
    print(f"  a new seed each time:    {', '.join(f'{s:.2f}' for s in changed)} s (best {min(changed):.2f})")
    print(f"  unchanged (from store):  {again:.2f} s")


if __name__ == "__main__":
    main()
