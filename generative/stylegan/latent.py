"""StyleGAN's latent tools: interpolation in z and in w, side by side."""

from __future__ import annotations

import numpy as np
import torch

from generative.gan.latent import image_grid, lerp
from generative.stylegan.model import StyleGAN


@torch.no_grad()
def z_and_w_interpolation_grid(
    model: StyleGAN, *, pairs: int = 4, steps: int = 10, seed: int = 0
) -> np.ndarray:
    """For each of `pairs` random latent pairs, two grid rows with the same end images: linear
    interpolation in z (each point mapped to w), then linear interpolation in w. Noise maps
    are the fixed ones, so only the latent path changes along a row."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    ends = model.sample_latent(2 * pairs, generator=generator)
    net = model.sampling_generator().eval()
    t = torch.linspace(0.0, 1.0, steps, device=ends.device)
    rows = []
    for pair in range(pairs):
        z0, z1 = ends[2 * pair], ends[2 * pair + 1]
        rows.append(model.generate(lerp(z0, z1, t), noise_mode="const"))
        w0, w1 = net.mapping(torch.stack([z0, z1]))
        ws = lerp(w0, w1, t)[:, None, :].expand(-1, model.config.num_layers, -1)
        rows.append(model.to_data_scale(net.synthesis(ws, noise_mode="const").float()))
    return image_grid(torch.cat(rows), nrow=steps)
