"""The toy model: a small Stable-Diffusion-1.x-shaped model trained to draw coloured shapes from text.

`scenes.py` draws the world it learns; `train.py` reproduces its weights (`python -m morph.models.toy.train`);
morph/analysis/toy_quality.py measures how well it listens.
"""
