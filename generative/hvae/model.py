"""A hierarchical VAE with top-down inference (the Ladder VAE / NVAE family, with MLP blocks).

Generative model: p(z_L) = N(0, I), p(z_l | z_{l+1}) = N(mu_l, sigma_l^2) for l = L-1 ... 1, and
p(x | z_1). Inference shares the top-down path: a deterministic bottom-up pass h_1 = f_1(x),
h_l = f_l(h_{l-1}) gives q(z_L | x) from h_L, then for l = L-1 ... 1, q(z_l | x, z_{l+1}) from
[h_l, z_{l+1}] (Sonderby et al. 2016; Vahdat and Kautz 2020, without the convolutions).

One engine, `log_weights`, gives per-sample log p(x, z) / q(z | x) for given standard normals;
the training objectives and the estimators are reductions of it. With `prior_layers=k` the k
lowest layers z_1..z_k are drawn from the conditional prior p(z_l | z_{l+1}) instead of q, so
their p / q terms cancel: that is the bound L^{>k} of Havtorn et al. (2021), whose difference
from the full bound is the hierarchical likelihood ratio LLR^{>k} (`llr`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from generative.hvae.config import HVAEConfig
from generative.vae.likelihoods import make_likelihood
from generative.vae.model import trimmed_rows
from generative.vae.networks import ACTIVATIONS, mlp

LOGVAR_RANGE = (-30.0, 20.0)
_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last axis."""
    return -0.5 * (logvar + (z - mu).square() * torch.exp(-logvar) + _LOG_2PI).sum(-1)


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) summed over the last axis, in closed form."""
    ratio = torch.exp(logvar_q - logvar_p)
    gap = (mu_q - mu_p).square() * torch.exp(-logvar_p)
    return 0.5 * (ratio + gap - 1.0 - (logvar_q - logvar_p)).sum(-1)


def _split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = params.chunk(2, dim=-1)
    return mu, logvar.clamp(*LOGVAR_RANGE)


class HVAE(nn.Module):
    """A VAE with `config.n_layers` stochastic layers and top-down inference.

    Inputs are batches shaped (N, *config.input_shape); every per-row quantity is in nats. The
    latent noise of one sample is one standard-normal vector of size sum(latent_dims), split
    bottom (z_1) to top (z_L). `noise(like)` is where training draws it (`torch.randn_like`
    unless replaced, as `generative.vae.VAE`).
    """

    family = "hvae"
    noise: Callable[[torch.Tensor], torch.Tensor] = staticmethod(torch.randn_like)

    def __init__(self, config: HVAEConfig) -> None:
        super().__init__()
        self.config = config
        dims, widths, act = config.latent_dims, config.block_widths, config.activation
        self.likelihood = make_likelihood(
            config.likelihood, config.data_dim, gaussian_std=config.gaussian_std
        )
        inputs = [config.data_dim, *widths[:-1]]
        self.up = nn.ModuleList(
            nn.Sequential(mlp([n_in, w, w], act), ACTIVATIONS[act]())
            for n_in, w in zip(inputs, widths, strict=True)
        )
        self.top_posterior = nn.Linear(widths[-1], 2 * dims[-1])
        below = range(config.n_layers - 1)  # layers 1..L-1, each conditioned on the one above
        self.priors = nn.ModuleList(
            mlp([dims[i + 1], widths[i], widths[i], 2 * dims[i]], act) for i in below
        )
        self.posteriors = nn.ModuleList(
            mlp([widths[i] + dims[i + 1], widths[i], 2 * dims[i]], act) for i in below
        )
        n_out = self.likelihood.n_params * config.data_dim
        self.decoder = mlp([dims[0], widths[0], widths[0], n_out], act)

    # --- the model -------------------------------------------------------------------------
    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The deterministic features h_1 ... h_L of `x`, each (N, block_width)."""
        features, h = [], x.flatten(1)
        for block in self.up:
            h = block(h)
            features.append(h)
        return features

    def decode(self, z1: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters (N, n_params, D) of p(x | z_1)."""
        return self.decoder(z1).view(z1.shape[0], self.likelihood.n_params, -1)

    def log_likelihood(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z_1) per row, given decoder params for those rows."""
        return self.likelihood.log_prob(params.float(), x.flatten(1).float())

    def _layer_params(
        self, layer: int, features: list[torch.Tensor], above: torch.Tensor | None
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """((mu, logvar) of the prior, (mu, logvar) of the posterior) of layer `layer` (0-based
        from the bottom), given the bottom-up features and the sample of the layer above."""
        if above is None:
            posterior = _split(self.top_posterior(features[layer]))
            zeros = torch.zeros_like(posterior[0])
            return (zeros, zeros), posterior
        prior = _split(self.priors[layer](above))
        posterior = _split(self.posteriors[layer](torch.cat([features[layer], above], -1)))
        return prior, posterior

    def log_weights(
        self, x: torch.Tensor, eps: torch.Tensor, prior_layers: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x | z_1), log p(z) - log q(z | x)) per sample, each (S, N), for standard
        normals `eps` (S, N, sum(latent_dims)); the k = `prior_layers` lowest layers are drawn
        from their conditional prior (their p / q terms cancel and are left out)."""
        n_samples, n_rows = eps.shape[:2]
        features = [h.unsqueeze(0).expand(n_samples, -1, -1) for h in self.bottom_up(x)]
        noises = eps.split(list(self.config.latent_dims), dim=-1)
        log_ratio = eps.new_zeros(n_samples, n_rows)
        above = None
        for layer in reversed(range(self.config.n_layers)):
            prior, posterior = self._layer_params(layer, features, above)
            if layer < prior_layers:
                above = prior[0] + torch.exp(0.5 * prior[1]) * noises[layer]
                continue
            above = posterior[0] + torch.exp(0.5 * posterior[1]) * noises[layer]
            log_q = -0.5 * (posterior[1] + noises[layer].square() + _LOG_2PI).sum(-1)
            log_ratio = log_ratio + gaussian_log_density(above, *prior) - log_q
        params = self.decode(above.reshape(n_samples * n_rows, -1))
        log_px_z = self.log_likelihood(params.view(n_samples, n_rows, *params.shape[1:]), x)
        return log_px_z, log_ratio

    # --- training --------------------------------------------------------------------------
    def kl_weight(self, step: int) -> float:
        """KL warm-up: the weight on the KL terms at optimisation step `step`."""
        if self.config.kl_warmup_steps <= 0:
            return 1.0
        return min(1.0, (step + 1) / self.config.kl_warmup_steps)

    def _training_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.config.binarize_training:
            return x
        return (torch.rand_like(x) < x).to(x.dtype)

    def _elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x | z_1), sum of the layers' closed-form KLs) per row, one posterior sample."""
        features = self.bottom_up(x)
        kl, above = x.new_zeros(x.shape[0]), None
        for layer in reversed(range(self.config.n_layers)):
            prior, posterior = self._layer_params(layer, features, above)
            above = posterior[0] + torch.exp(0.5 * posterior[1]) * self.noise(posterior[0])
            kl = kl + gaussian_kl(*posterior, *prior)
        return self.log_likelihood(self.decode(above), x), kl

    def training_loss(
        self, x: torch.Tensor, step: int, teacher: HVAE | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The negative objective: the ELBO (closed-form KL per layer, KL warm-up) or the
        importance-weighted bound with `train_samples` samples."""
        if teacher is not None:
            raise ValueError("the hierarchical VAE does not rank rows by a teacher")
        x = self._training_input(x)
        if self.config.objective == "iwae":
            size = (self.config.train_samples, x.shape[0], sum(self.config.latent_dims))
            log_px_z, log_ratio = self.log_weights(x, self.noise(x.new_empty(size)))
            bound = torch.logsumexp(log_px_z + log_ratio, 0) - math.log(size[0])
            return -bound.mean(), {"iwae": bound.mean().item()}
        log_px_z, kl = self._elbo_terms(x)
        beta = self.kl_weight(step)
        row_loss = beta * kl - log_px_z
        kept = trimmed_rows(
            row_loss, self.config.trim_fraction, self.config.trim_warmup_steps, step
        )
        metrics = {"elbo": (log_px_z - kl).mean().item(), "kl": kl.mean().item()}
        return row_loss[kept].mean(), {**metrics, "kl_weight": beta, "kept": len(kept) / len(x)}

    def validation_score(self, x: torch.Tensor) -> torch.Tensor:
        """Single-sample ELBO per row, the quantity early stopping watches (higher is better)."""
        log_px_z, kl = self._elbo_terms(x)
        return log_px_z - kl

    @torch.no_grad()
    def active_units(
        self, x: torch.Tensor, threshold: float = 0.01, *, max_rows: int = 8192
    ) -> int:
        """Latent units, over all layers, whose posterior mean varies across `x` (variance above
        `threshold`; Burda et al. 2016), each layer's mean taken given the mean of the one above."""
        means = [self._posterior_means(chunk) for chunk in x.split(max_rows)]
        layers = [torch.cat(parts) for parts in zip(*means, strict=True)]
        return int(sum((layer.var(dim=0) > threshold).sum() for layer in layers))

    def _posterior_means(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The posterior mean of every layer, top down, each given the mean of the layer above."""
        features, above, means = self.bottom_up(x), None, []
        for layer in reversed(range(self.config.n_layers)):
            above = self._layer_params(layer, features, above)[1][0]
            means.append(above)
        return means

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder means at the posterior means of `x` (top down), shaped (N, *input_shape)."""
        means = self.likelihood.mean(self.decode(self._posterior_means(x)[-1]))
        return means.view(len(x), *self.config.input_shape)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means of n ancestral draws z_L ~ p(z_L), ..., z_1 ~ p(z_1 | z_2), shaped
        (n, *input_shape)."""
        device = next(self.parameters()).device
        dims = self.config.latent_dims
        z = torch.randn(n, dims[-1], generator=generator).to(device)
        for layer in reversed(range(self.config.n_layers - 1)):
            mu, logvar = _split(self.priors[layer](z))
            eps = torch.randn(n, dims[layer], generator=generator).to(device)
            z = mu + torch.exp(0.5 * logvar) * eps
        return self.likelihood.mean(self.decode(z)).view(n, *self.config.input_shape)
