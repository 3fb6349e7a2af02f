"""The predictor's network: an e3nn gated equivariant convolution network on the periodic graph of a
crystal, in the style of Chen et al., Adv. Sci. 8, 2004214 (2021).

Nodes carry a mass-weighted one-hot species vector, embedded linearly (once as features, once as
attributes); edges join atoms closer than ``cutoff`` across periodic boundaries and carry spherical
harmonics of their direction times a smooth cutoff, and a Gaussian basis of their length. The
layers are those of e3nn's ``gate_points_2101.Network`` (convolution + gate, a last convolution
to ``n_out`` scalars per atom). Each atom's output goes through softplus (non-negative), and the
crystal's spectrum is the mean over its atoms (a latent head, ``head: latent``, returns the plain
mean: the autoencoder code of a S(Q,E) map, :mod:`mlff_ins.predict.autoencoder`), so a supercell
gives the same spectrum and each element's share of the mean is its partial spectrum. Spectra
are max-normalised at the end (the targets are too), as in the papers. With ``hyper['baseline']``
(the mean training spectrum) the network learns the residual from that one spectrum for all,
through a gain that starts at zero: it starts as the baseline a useful predictor must beat.
With ``hyper['basis']`` each atom's output is a combination of that many Gaussians spread over
each target's bins (as wide as their spacing) rather than one free value per bin: smooth by
construction, where free bins learned bin-to-bin noise from a few hundred crystals.

Everything that defines a network is in its ``hyper`` dict, saved beside the weights
(:mod:`mlff_ins.predict.predictor`); nothing here is a hidden constant.
"""

from __future__ import annotations

import numpy as np
import torch

#: species known to the embedding: Z = 1 .. N_SPECIES
N_SPECIES = 94


def default_hyper(n_out: int) -> dict:
    return {"cutoff_A": 5.0, "lmax": 2, "embed_dim": 16, "node_attr": "unit",
            "hidden": "32x0e+32x0o+8x1e+8x1o+4x2e+4x2o",
            "layers": 2, "number_of_basis": 10, "radial_layers": 1, "radial_neurons": 32,
            "num_neighbors": 30.0, "n_out": int(n_out), "n_species": N_SPECIES,
            # 60 Gaussians over each block's 120 bins (docs/benchmarks.md: the same error as a
            # free value per bin, without its bin-to-bin noise)
            "basis": 60}


def graph(atoms, cutoff: float) -> dict:
    """Node and edge arrays of one periodic structure (numpy): ``z`` (atomic numbers), ``mass``,
    ``src``, ``dst``, ``vec`` (Å, from src to dst across the boundaries)."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijD", atoms, cutoff)
    return {"z": atoms.numbers.astype(np.int64), "mass": atoms.get_masses().astype(np.float64),
            "src": i.astype(np.int64), "dst": j.astype(np.int64), "vec": d.astype(np.float64)}


def collate(graphs: list[dict], dtype=torch.float32, device="cpu") -> dict:
    """One batch of graphs as tensors, node indices offset, ``batch`` giving each node's graph."""
    offsets = np.cumsum([0] + [len(g["z"]) for g in graphs[:-1]])
    cat = lambda key: np.concatenate([g[key] for g in graphs])  # noqa: E731
    return {
        "z": torch.as_tensor(cat("z"), device=device),
        "mass": torch.as_tensor(cat("mass"), dtype=dtype, device=device),
        "src": torch.as_tensor(np.concatenate([g["src"] + o for g, o in zip(graphs, offsets)]),
                               device=device),
        "dst": torch.as_tensor(np.concatenate([g["dst"] + o for g, o in zip(graphs, offsets)]),
                               device=device),
        "vec": torch.as_tensor(cat("vec"), dtype=dtype, device=device),
        "batch": torch.as_tensor(np.repeat(np.arange(len(graphs)), [len(g["z"]) for g in graphs]),
                                 device=device),
        "n_graphs": len(graphs),
        **_collate_partials(graphs, dtype, device),
    }


def _collate_partials(graphs: list[dict], dtype, device) -> dict:
    """Element-partial targets, when every graph has them (``elem_slot``: each node's element
    index within its graph; ``partial``: (elements, blocks, bins), NaN where a target has no
    partials): ``group`` (each node's (graph, element) group), ``group_graph`` and the
    stacked targets ``partial``."""
    if not graphs or not all("partial" in g for g in graphs):
        return {}
    offsets = np.cumsum([0] + [len(g["partial"]) for g in graphs[:-1]])
    return {
        "group": torch.as_tensor(np.concatenate([g["elem_slot"] + o
                                                 for g, o in zip(graphs, offsets)]),
                                 device=device),
        "group_graph": torch.as_tensor(np.repeat(np.arange(len(graphs)),
                                                 [len(g["partial"]) for g in graphs]),
                                       device=device),
        "partial": torch.as_tensor(np.concatenate([g["partial"] for g in graphs]), dtype=dtype,
                                   device=device),
    }


class SpectrumNetwork(torch.nn.Module):
    """Structure -> non-negative per-atom spectra (``n_out`` bins) -> their mean per crystal."""

    def __init__(self, hyper: dict):
        super().__init__()
        from e3nn import o3
        from e3nn.nn.models.gate_points_2101 import Network

        self.hyper = dict(hyper)
        em = int(hyper["embed_dim"])
        self.embed_x = torch.nn.Linear(hyper["n_species"], em)
        self.embed_z = torch.nn.Linear(hyper["n_species"], em)
        if hyper.get("node_attr") == "unit":
            # every tensor product of every layer multiplies by the node attributes: they must
            # be of order one. nn.Linear's default init on a one-hot input gives ~0.03 (after
            # the ReLU), which shrank the signal ~30x per layer: at initialisation the output
            # varied by 1e-5 between structures and training found no more than the mean
            # spectrum. Unit-variance weights, no bias, no ReLU: attributes of unit variance.
            torch.nn.init.normal_(self.embed_z.weight, std=1.0)
            torch.nn.init.zeros_(self.embed_z.bias)
        self.irreps_sh = o3.Irreps.spherical_harmonics(int(hyper["lmax"]))
        n_net = int(hyper["n_out"])
        if hyper.get("basis") and hyper.get("head") != "latent":
            # each block's per-atom output is a combination of hyper["basis"] Gaussians evenly
            # spread over its bins instead of one free value per bin: smooth by construction
            nb = int(hyper.get("n_blocks", 1))
            self.register_buffer("basis_matrix", smooth_basis(n_net // nb, int(hyper["basis"])))
            n_net = nb * int(hyper["basis"])
        self.net = Network(irreps_in=f"{em}x0e", irreps_hidden=hyper["hidden"],
                           irreps_out=f"{n_net}x0e",
                           irreps_node_attr=f"{em}x0e", irreps_edge_attr=self.irreps_sh,
                           layers=int(hyper["layers"]), max_radius=float(hyper["cutoff_A"]),
                           number_of_basis=int(hyper["number_of_basis"]),
                           radial_layers=int(hyper["radial_layers"]),
                           radial_neurons=int(hyper["radial_neurons"]),
                           num_neighbors=float(hyper["num_neighbors"]), num_nodes=1.0,
                           reduce_output=False)
        if hyper.get("baseline") is not None and hyper.get("head") != "latent":
            # residual on one spectrum for all: each atom's output is
            # softplus(gain * network + softplus⁻¹(baseline)), the gain starting at zero
            # (ReZero, Bachlechner et al., 2020), so the untrained network predicts the mean
            # training spectrum and training moves away from it only as far as it helps
            base = torch.as_tensor(np.clip(np.asarray(hyper["baseline"], dtype=np.float64),
                                           1e-4, None).ravel())
            self.register_buffer("base_logit", (base + torch.log(-torch.expm1(-base))).float())
            self.gain = torch.nn.Parameter(torch.zeros(()))
        if hyper.get("head") == "latent" and hyper.get("rezero"):
            # a latent head starts at the mean code (outputs are standardised codes) with the
            # same zero-initialised gain: untrained, its raw outputs varied by ~12 on the
            # 702-entry database (loss 141 on the first batch), and the first steps left every
            # latent network predicting the mean code for good
            self.gain = torch.nn.Parameter(torch.zeros(()))
        # float32 whatever torch's default (nequip sets float64 globally when imported)
        self.float()

    def atom_outputs(self, data: dict) -> torch.Tensor:
        """(atoms, n_out) per-atom outputs before pooling: non-negative spectra (softplus), or
        the raw values for a latent head (``hyper['head'] == 'latent'``)."""
        from e3nn import o3
        from e3nn.math import soft_one_hot_linspace
        from e3nn.nn.models.gate_points_2101 import smooth_cutoff

        h = self.hyper
        onehot = torch.nn.functional.one_hot(data["z"] - 1, h["n_species"]).to(data["vec"].dtype)
        x = torch.relu(self.embed_x(onehot * data["mass"][:, None]))
        z = self.embed_z(onehot)
        if h.get("node_attr") != "unit":          # predictors trained before the fix
            z = torch.relu(z)
        vec = data["vec"]
        length = vec.norm(dim=1)
        sh = o3.spherical_harmonics(self.irreps_sh, vec, True, normalization="component")
        basis = soft_one_hot_linspace(length, 0.0, float(h["cutoff_A"]), int(h["number_of_basis"]),
                                      basis="gaussian", cutoff=False) * h["number_of_basis"] ** 0.5
        edge_attr = smooth_cutoff(length / float(h["cutoff_A"]))[:, None] * sh
        for layer in self.net.layers:
            x = layer(x, z, data["src"], data["dst"], edge_attr, basis)
        if h.get("head") == "latent":
            return self.gain * x if hasattr(self, "gain") else x
        if hasattr(self, "basis_matrix"):
            x = (x.reshape(len(x), -1, self.basis_matrix.shape[1])
                 @ self.basis_matrix.T).reshape(len(x), -1)
        if hasattr(self, "gain"):
            x = self.gain * x + self.base_logit
        return torch.nn.functional.softplus(x)

    def forward_with_partials(self, data: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(crystal spectra as :meth:`forward`, element partials (groups, n_blocks, bins) on
        the same scale: each element's share of the atom mean, divided by the crystal's
        maximum), for the batch's (graph, element) groups (``collate`` of graphs with
        partial targets)."""
        nb = int(self.hyper.get("n_blocks", 1))
        per_atom = self.atom_outputs(data)
        n = data["n_graphs"]
        count = per_atom.new_zeros(n).index_add_(0, data["batch"],
                                                 torch.ones_like(data["batch"],
                                                                 dtype=per_atom.dtype))
        total = pool_mean(per_atom, data["batch"], n).reshape(n, nb, -1)
        scale = total.max(dim=2, keepdim=True).values.clamp_min(1e-12)
        n_groups = len(data["group_graph"])
        sums = per_atom.new_zeros((n_groups, per_atom.shape[1])).index_add_(0, data["group"],
                                                                            per_atom)
        g = data["group_graph"]
        parts = sums.reshape(n_groups, nb, -1) / count[g][:, None, None] / scale[g]
        return total / scale, parts

    def forward(self, data: dict) -> torch.Tensor:
        """(graphs, n_blocks, bins) crystal spectra, each block (one target spectrum) divided by
        its maximum."""
        per_atom = self.atom_outputs(data)
        total = pool_mean(per_atom, data["batch"], data["n_graphs"])
        if self.hyper.get("head") == "latent":
            return total                      # (graphs, latent_dim): the code of a map
        total = total.reshape(data["n_graphs"], int(self.hyper.get("n_blocks", 1)), -1)
        return total / total.max(dim=2, keepdim=True).values.clamp_min(1e-12)


def smooth_basis(n_bins: int, n_basis: int) -> torch.Tensor:
    """(n_bins, n_basis) Gaussians of unit height centred evenly from the first bin to the last,
    each as wide (standard deviation) as the spacing of their centres."""
    centres = np.linspace(0.0, n_bins - 1.0, n_basis)
    width = centres[1] - centres[0] if n_basis > 1 else float(n_bins)
    x = np.arange(n_bins, dtype=np.float64)[:, None]
    return torch.as_tensor(np.exp(-0.5 * ((x - centres[None, :]) / width) ** 2),
                           dtype=torch.float32)


def pool_mean(values: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
    out = values.new_zeros((n_graphs, values.shape[1])).index_add_(0, batch, values)
    count = values.new_zeros(n_graphs).index_add_(0, batch,
                                                   torch.ones_like(batch, dtype=values.dtype))
    return out / count[:, None]
