"""The 2D half of the predictor: powder S(Q,E) maps compressed to a small latent vector.

As in Cheng et al., Mach. Learn.: Sci. Technol. 4, 015010 (2023): each map is divided by its
maximum and brightened with g(x) = 1 − (1 − x)³ (weak features gain weight), an autoencoder learns
a ``latent_dim``-dimensional code of the brightened maps, and an e3nn network
(:class:`~mlff_ins.predict.network.SpectrumNetwork` with a latent head) predicts the code from the
structure; the decoder turns it back into a map. The paper's fully connected autoencoder (90 000 →
2500 → 500 → 50, ~450 M weights) is replaced by a convolutional one of ~0.6 M weights: three
stride-2 convolutions (16, 32, 32 channels), one linear layer to the code and the mirror image
back, a sigmoid at the
end (brightened maps lie in [0, 1]). Maps are zero-padded to a multiple of 8 on each axis and
cropped back after decoding.
"""

from __future__ import annotations

import numpy as np
import torch


def brighten(x):
    """g(x) = 1 − (1 − x)³ of a max-normalised map (values in [0, 1])."""
    return 1.0 - (1.0 - x) ** 3


def darken(g):
    """The inverse of :func:`brighten`: x = 1 − (1 − g)^(1/3)."""
    return 1.0 - np.cbrt(1.0 - np.clip(g, 0.0, 1.0))


def prepare(maps) -> np.ndarray:
    """(n, nQ, nE) maps -> brightened, each divided by its maximum (NaN and negatives -> 0)."""
    m = np.nan_to_num(np.asarray(maps, dtype=np.float64), nan=0.0).clip(min=0.0)
    top = m.reshape(len(m), -1).max(axis=1)
    top[top <= 0] = 1.0
    return brighten(m / top[:, None, None]).astype(np.float32)


def default_ae_hyper(shape) -> dict:
    return {"shape": [int(shape[0]), int(shape[1])], "channels": [16, 32, 32],
            "latent_dim": 50}


class MapAutoencoder(torch.nn.Module):
    """Convolutional autoencoder of brightened S(Q,E) maps (shape ``hyper['shape']``)."""

    def __init__(self, hyper: dict):
        super().__init__()
        self.hyper = dict(hyper)
        nq, ne = hyper["shape"]
        c = list(hyper["channels"])
        depth = len(c)
        self.padded = [int(np.ceil(n / 2 ** depth) * 2 ** depth) for n in (nq, ne)]
        self.inner = [n // 2 ** depth for n in self.padded]
        layers, prev = [], 1
        for ch in c:
            layers += [torch.nn.Conv2d(prev, ch, 4, stride=2, padding=1), torch.nn.SiLU()]
            prev = ch
        self.encoder = torch.nn.Sequential(*layers, torch.nn.Flatten(),
                                           torch.nn.Linear(prev * self.inner[0] * self.inner[1],
                                                           hyper["latent_dim"]))
        self.expand = torch.nn.Linear(hyper["latent_dim"], prev * self.inner[0] * self.inner[1])
        layers = []
        for ch in reversed([1] + c[:-1]):
            layers += [torch.nn.ConvTranspose2d(prev, ch, 4, stride=2, padding=1),
                       torch.nn.SiLU() if ch != 1 else torch.nn.Identity()]
            prev = ch
        self.decoder = torch.nn.Sequential(*layers)
        self.float()           # float32 whatever torch's default (nequip sets float64)

    def _pad(self, maps: torch.Tensor) -> torch.Tensor:
        nq, ne = self.hyper["shape"]
        return torch.nn.functional.pad(maps[:, None], (0, self.padded[1] - ne,
                                                       0, self.padded[0] - nq))

    def encode(self, maps: torch.Tensor) -> torch.Tensor:
        """(n, nQ, nE) brightened maps -> (n, latent_dim) codes."""
        return self.encoder(self._pad(maps))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(n, latent_dim) codes -> (n, nQ, nE) brightened maps in [0, 1]."""
        nq, ne = self.hyper["shape"]
        c = self.hyper["channels"][-1]
        x = self.expand(codes).reshape(len(codes), c, *self.inner)
        return torch.sigmoid(self.decoder(x))[:, 0, :nq, :ne]

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(maps))


def train_autoencoder(model: MapAutoencoder, train: np.ndarray, valid: np.ndarray, *,
                      epochs: int, batch_size: int = 16, lr: float = 2e-3, seed: int = 0,
                      progress=None, device="cpu") -> dict:
    """MSE on brightened maps with Adam, on ``device``; the best validation state is kept."""
    import copy

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.97)
    tr, va = torch.as_tensor(train, device=device), torch.as_tensor(valid, device=device)
    best, best_state, history = np.inf, None, []
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(tr))
        total = 0.0
        for k in range(0, len(order), batch_size):
            batch = tr[order[k:k + batch_size]]
            opt.zero_grad()
            loss = torch.mean((model(batch) - batch) ** 2)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        sched.step()
        model.eval()
        with torch.no_grad():
            vloss = float(torch.mean((model(va) - va) ** 2)) if len(va) else total / len(tr)
        history.append({"epoch": epoch + 1, "train_mse": total / len(tr), "valid_mse": vloss})
        if vloss < best:
            best, best_state = vloss, copy.deepcopy(model.state_dict())
        if progress is not None:
            progress(epoch + 1, total / len(tr), vloss)
    model.load_state_dict(best_state)
    return {"best_valid_mse": best, "history": history}
