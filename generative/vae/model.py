"""The variational autoencoder: q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = N(0, I), p(x|z)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from generative.vae.config import VAEConfig
from generative.vae.estimators import DEFAULT_MAX_ROWS, estimate_log_px
from generative.vae.likelihoods import make_likelihood
from generative.vae.networks import BACKBONES

LOGVAR_RANGE = (-30.0, 20.0)


class VAE(nn.Module):
    """A VAE with closed-form KL, reparameterised training and three log p(x) estimators.

    Inputs are batches shaped (N, *config.input_shape). Every per-row quantity is in nats;
    `bits_per_dim` converts a log-likelihood of a discrete model to a code length per dimension.

    `noise(like)` is where training and validation draw the reparameterisation's standard normals
    (shaped like `like`): `torch.randn_like` unless replaced on the instance. A data-parallel
    `generative.training.Trainer` replaces it during each batch with a draw for the whole global
    batch of which this process takes its rows (`generative.distributed.GlobalBatchNoise`).
    """

    family = "vae"
    noise: Callable[[torch.Tensor], torch.Tensor] = staticmethod(torch.randn_like)

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if config.backbone not in BACKBONES:
            raise ValueError(
                f"unknown backbone {config.backbone!r}; choose one of {sorted(BACKBONES)}"
            )
        encoder_cls, decoder_cls = BACKBONES[config.backbone]
        self.config = config
        self.likelihood = make_likelihood(
            config.likelihood, config.data_dim, gaussian_std=config.gaussian_std
        )
        self.encoder = encoder_cls(config)
        self.decoder = decoder_cls(config, self.likelihood.n_params)

    # --- the model -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters (mu, log sigma^2) of q(z|x), each (N, latent_dim)."""
        mu, logvar = self.encoder(x)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters (N, n_params, D) of p(x|z)."""
        return self.decoder(z)

    @staticmethod
    def reparameterize(
        mu: torch.Tensor,
        logvar: torch.Tensor,
        noise: Callable[[torch.Tensor], torch.Tensor] = torch.randn_like,
    ) -> torch.Tensor:
        """z = mu + sigma * eps with eps = noise(mu) ~ N(0, I): a sample of q(z|x) that
        gradients flow through."""
        return mu + torch.exp(0.5 * logvar) * noise(mu)

    @staticmethod
    def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(0, 1)) per latent dimension, in closed form."""
        return 0.5 * (mu.square() + torch.exp(logvar) - 1.0 - logvar)

    def kl_divergence(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per row, in closed form."""
        return self.kl_per_dim(mu, logvar).sum(dim=-1)

    def log_likelihood(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per row, given decoder params for those rows."""
        return self.likelihood.log_prob(params.float(), x.flatten(1).float())

    # --- training --------------------------------------------------------------------------
    def kl_weight(self, step: int) -> float:
        """KL warm-up: the weight on the KL term at optimisation step `step`."""
        if self.config.kl_warmup_steps <= 0:
            return 1.0
        return min(1.0, (step + 1) / self.config.kl_warmup_steps)

    def training_loss(
        self, x: torch.Tensor, step: int, teacher: VAE | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative ELBO (one reparameterised sample) with KL warm-up and free bits, over the
        rows `kept_rows` keeps (all of them unless the config trims). With a `teacher` (an EMA
        of this model's weights), the rows are ranked by the teacher's single-sample ELBO."""
        mu, logvar = self.encode(self.masked_input(x))
        log_px_z = self.log_likelihood(self.decode(self.reparameterize(mu, logvar, self.noise)), x)
        kl_dims = self.kl_per_dim(mu.float(), logvar.float())
        beta = self.kl_weight(step)
        elbo = (log_px_z - kl_dims.sum(dim=-1)).mean()
        if teacher is None:
            row_loss = beta * kl_dims.sum(dim=-1) - log_px_z
        else:
            with torch.no_grad():
                row_loss = -teacher.validation_score(x)
        kept = self.kept_rows(row_loss, step)
        log_px_z, kl_dims = log_px_z[kept], kl_dims[kept]
        penalised = kl_dims.mean(dim=0)
        if self.config.free_bits > 0:
            penalised = penalised.clamp(min=self.config.free_bits)
        loss = -log_px_z.mean() + beta * penalised.sum()
        metrics = {"elbo": elbo.item(), "kl": kl_dims.sum(-1).mean().item(), "kl_weight": beta}
        return loss, {**metrics, "kept": len(log_px_z) / len(x)}

    def masked_input(self, x: torch.Tensor) -> torch.Tensor:
        """`x` with each feature zeroed with probability `config.input_mask` (training only)."""
        if self.config.input_mask <= 0:
            return x
        keep = torch.rand_like(x, dtype=torch.float32) >= self.config.input_mask
        return x * keep.to(x.dtype)

    def kept_rows(self, row_loss: torch.Tensor, step: int) -> torch.Tensor:
        """Indices of the rows a trimmed ELBO trains on (see `trimmed_rows`)."""
        return trimmed_rows(
            row_loss, self.config.trim_fraction, self.config.trim_warmup_steps, step
        )

    def validation_score(self, x: torch.Tensor) -> torch.Tensor:
        """Single-sample ELBO per row, the quantity early stopping watches (higher is better)."""
        mu, logvar = self.encode(x)
        return self.sampled_elbo(x, mu, logvar, self.noise(mu).unsqueeze(0))

    def sampled_elbo(
        self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """Per-row ELBO of the posterior N(mu, exp(logvar)) with the standard normals `eps`
        (S, N, d): the mean over the S draws of log p(x | z) minus the closed-form KL;
        differentiable in mu and logvar (Likelihood Regret optimises them per row)."""
        n_samples, n_rows = eps.shape[:2]
        z = mu + torch.exp(0.5 * logvar) * eps
        params = self.decode(z.reshape(n_samples * n_rows, -1))
        targets = x.unsqueeze(0).expand(n_samples, *x.shape).reshape(-1, *x.shape[1:])
        log_px_z = self.log_likelihood(params, targets).view(n_samples, n_rows)
        return log_px_z.mean(0) - self.kl_divergence(mu.float(), logvar.float())

    # --- per-row likelihood estimates ------------------------------------------------------
    def elbo(self, x: torch.Tensor, n_samples: int = 1, **options) -> torch.Tensor:
        """ELBO per row: mean over `n_samples` z ~ q(z|x) of log p(x|z), minus the closed-form KL.

        Options (all estimators): seed, max_rows, memory_mb, progress; see `estimate_log_px`.
        """
        return estimate_log_px(self, x, method="elbo", n_samples=n_samples, **options)

    def log_px_iwae(self, x: torch.Tensor, n_samples: int = 100, **options) -> torch.Tensor:
        """Importance-sampled log p(x) (the IWAE bound) per row with K = `n_samples`."""
        return estimate_log_px(self, x, method="iwae", n_samples=n_samples, **options)

    def log_px_prior_mc(self, x: torch.Tensor, n_samples: int = 1000, **options) -> torch.Tensor:
        """The seed's Monte Carlo log p(x) ~ log 1/K sum_k p(x|z_k), z_k ~ p(z), per row."""
        return estimate_log_px(self, x, method="prior_mc", n_samples=n_samples, **options)

    @staticmethod
    def bits_per_dim(log_px: torch.Tensor, data_dim: int) -> torch.Tensor:
        """Convert log p(x) in nats to -log2 p(x) / D, the code length in bits per dimension."""
        return -log_px / (data_dim * math.log(2.0))

    @torch.no_grad()
    def active_units(
        self,
        x: torch.Tensor,
        threshold: float = 0.01,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> int:
        """Latent units whose posterior mean varies across `x`: Cov_x(E_q[z_j]) > threshold.

        The activity statistic of Burda et al. (2016); collapsed units have variance near 0.
        """
        means = torch.cat([self.encode(chunk)[0] for chunk in x.split(max_rows)])
        return int((means.var(dim=0) > threshold).sum())

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder means at the posterior means of `x`, shaped (N, *input_shape)."""
        means = self.likelihood.mean(self.decode(self.encode(x)[0]))
        return means.view(len(x), *self.config.input_shape)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means of n draws z ~ p(z), shaped (n, *input_shape)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator).to(device)
        return self.likelihood.mean(self.decode(z)).view(n, *self.config.input_shape)


def trimmed_rows(
    row_loss: torch.Tensor, fraction: float, warmup_steps: int, step: int
) -> torch.Tensor:
    """Indices of the rows a trimmed objective trains on: all but the floor(fraction * n) rows
    of highest `row_loss` (from optimisation step `warmup_steps` on; before, every row)."""
    n_drop = math.floor(fraction * len(row_loss))
    if n_drop == 0 or step < warmup_steps:
        return torch.arange(len(row_loss), device=row_loss.device)
    return torch.topk(row_loss.detach(), len(row_loss) - n_drop, largest=False).indices
