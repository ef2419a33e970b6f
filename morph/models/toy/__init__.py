"""The toy model: a small Stable-Diffusion-1.x-shaped model trained to draw coloured shapes from text.

`scenes.py` draws the world it learns; `train.py` reproduces its weights; `quality.py` measures it.
"""
