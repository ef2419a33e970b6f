"""From texts to the walk: prompt tensors encoded, the tensor math (lerp, slerp, arithmetic, easing), the path of
frames between keyframes and what walks along (noise, negatives, guidance, LoRA strengths)."""
