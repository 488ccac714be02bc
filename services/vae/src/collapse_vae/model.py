"""The VAE of the paper's App. E, derived for any image size and channel count.

App. E: images cropped and down-sampled to 64×64; "a standard convolutional architecture ...
5 convolutional layers with 32, 64, 128, 256 and 512 channels, and a similar convolutional
decoder; the latent space is a 128-dimensional isotropic Gaussian, represented by 2 MLP
layers". Read here as:

* encoder: ``L`` blocks Conv2d(k=4, stride 2, pad 1) → BatchNorm → LeakyReLU(0.2), each
  halving the side (64 → 32 → 16 → 8 → 4 → 2 for the paper's five layers);
* the "2 MLP layers": two linear heads from the flattened last feature map to the posterior
  mean μ and log-variance log σ² (128-d each);
* decoder, mirrored: Linear(latent → last feature map), then ``L`` ConvTranspose2d(k=4,
  stride 2, pad 1) blocks doubling the side; the last one maps to the image channels and
  gives per-pixel logits (no norm / activation).

Other sizes: the input is zero-padded (centred) to the next multiple of ``2**L`` on each side
and the decoder output is centre-cropped back, so 28×28 Fashion-MNIST with five layers runs
on 32×32 (→ 1×1×512 bottleneck) and the loss only sees the 28×28 pixels. Zero padding is the
natural choice there: Fashion-MNIST's background is 0.

Likelihood p(x|z): see :func:`recon_nll`. Hyper-parameters live in :class:`VaeArch`, which is
stored beside the weights (``config.json``) so loading never guesses.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

Likelihood = Literal["bernoulli", "gaussian"]


@dataclass(frozen=True)
class VaeArch:
    image_channels: int  # C: 1 for Fashion-MNIST, 3 for CelebA
    height: int  # H of the stored images
    width: int  # W
    hidden: tuple[int, ...] = (32, 64, 128, 256, 512)  # encoder channels, one per stride-2 layer
    latent: int = 128
    likelihood: Likelihood = "bernoulli"
    gaussian_sigma: float = 0.1  # fixed σ of the Gaussian likelihood (pixel units in [0, 1])
    kernel: int = field(default=4, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(c) for c in self.hidden))
        if not self.hidden:
            raise ValueError("the VAE needs at least one convolutional layer")

    @property
    def padded(self) -> tuple[int, int]:
        """(H', W'): H and W rounded up to a multiple of 2**L."""
        step = 2 ** len(self.hidden)
        return (math.ceil(self.height / step) * step, math.ceil(self.width / step) * step)

    @property
    def bottom(self) -> tuple[int, int]:
        """Side of the last encoder feature map."""
        step = 2 ** len(self.hidden)
        return (self.padded[0] // step, self.padded[1] // step)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one stored uint8 image: (H, W) grey, (C, H, W) colour."""
        if self.image_channels == 1:
            return (self.height, self.width)
        return (self.image_channels, self.height, self.width)

    @property
    def flat(self) -> int:
        return self.hidden[-1] * self.bottom[0] * self.bottom[1]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VaeArch:
        return cls(**{**data, "hidden": tuple(data["hidden"])})


def _down(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2))


def _up(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2))


class ConvVae(nn.Module):
    def __init__(self, arch: VaeArch) -> None:
        super().__init__()
        self.arch = arch
        k, hidden = arch.kernel, arch.hidden
        channels = (arch.image_channels, *hidden)
        self.encoder = nn.Sequential(*(_down(a, b, k) for a, b in itertools.pairwise(channels)))
        self.to_mu = nn.Linear(arch.flat, arch.latent)
        self.to_logvar = nn.Linear(arch.flat, arch.latent)
        self.from_latent = nn.Linear(arch.latent, arch.flat)
        back = hidden[::-1]  # 512, 256, 128, 64, 32
        self.decoder = nn.Sequential(
            *(_up(a, b, k) for a, b in itertools.pairwise(back)),
            nn.ConvTranspose2d(back[-1], arch.image_channels, k, stride=2, padding=1),
        )

    # --- shapes ---------------------------------------------------------------------------

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        (ph, pw), (h, w) = self.arch.padded, (self.arch.height, self.arch.width)
        if (ph, pw) == (h, w):
            return x
        top, left = (ph - h) // 2, (pw - w) // 2
        return F.pad(x, (left, pw - w - left, top, ph - h - top))  # (B, C, H', W')

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        (ph, pw), (h, w) = self.arch.padded, (self.arch.height, self.arch.width)
        top, left = (ph - h) // 2, (pw - w) // 2
        return x[:, :, top : top + h, left : left + w]  # (B, C, H, W)

    # --- the network ----------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) in [0, 1] → μ, log σ² (B, latent)."""
        h = self.encoder(self._pad(x))  # (B, hidden[-1], bh, bw)
        h = h.flatten(1)  # (B, flat)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent) → per-pixel logits (B, C, H, W)."""
        bh, bw = self.arch.bottom
        h = self.from_latent(z).view(-1, self.arch.hidden[-1], bh, bw)  # (B, hidden[-1], bh, bw)
        return self._crop(self.decoder(h))  # (B, C, H'→H, W'→W)

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, μ, log σ²) with z = μ + σ·noise (noise (B, latent) ~ N(0, I))."""
        mu, logvar = self.encode(x)  # (B, latent) each
        z = mu + torch.exp(0.5 * logvar) * noise  # (B, latent)
        return self.decode(z), mu, logvar

    def mean_image(self, logits: torch.Tensor) -> torch.Tensor:
        """E[x | z] in [0, 1] for both likelihoods: sigmoid of the decoder output."""
        return torch.sigmoid(logits)


def recon_nll(arch: VaeArch, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """−log p(x | z) per image (B,), in nats, summed over pixels; x in [0, 1].

    Default ``bernoulli``: x/255 is the Bernoulli mean, the loss is the per-pixel binary cross
    entropy. Why: it is the standard likelihood for (Fashion-)MNIST VAEs, it needs no noise
    scale to tune (a fixed-variance Gaussian's σ silently sets the weight of the KL term and
    so how blurry samples are), its minimiser is the true grey value, and the decoder mean is
    the image we quantise when sampling. It is not a normalised density for grey values
    (continuous Bernoulli would be, at the cost of a mean that is not sigmoid(logits)), so the
    negative ELBO is a loss comparable across iterations and regimes of the lab, not a bound on
    −log p(x) comparable with other papers. ``gaussian`` (fixed σ, mean sigmoid(logits)) is
    the MSE-style alternative many CelebA VAEs use.
    """
    if arch.likelihood == "bernoulli":
        per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")  # (B, C, H, W)
    else:
        sigma = arch.gaussian_sigma
        per_pixel = 0.5 * ((x - torch.sigmoid(logits)) / sigma) ** 2 + math.log(sigma * math.sqrt(2 * math.pi))
    return per_pixel.flatten(1).sum(1)  # (B,)


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per image (B,), in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def as_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) or (B, C, H, W) → float (B, C, H, W) in [0, 1]."""
    x = images if images.dim() == 4 else images.unsqueeze(1)
    return x.to(torch.float32).div_(255.0)


def quantise(mean: torch.Tensor) -> torch.Tensor:
    """Decoder means in [0, 1] (B, C, H, W) → uint8 images, (B, H, W) when C = 1."""
    out = mean.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out[:, 0] if out.shape[1] == 1 else out


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
