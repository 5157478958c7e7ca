"""CRAFT: contrastive RNA–ATAC fine-tuning. One network, readable in one sitting:

    ATAC batch ──Atacformer──> <cls> (B, d_atac) ──proj_atac──> z_atac (B, D) ─┐
                                  └──impute head──> RNA (B, G)                  ├─ symmetric InfoNCE
    RNA counts (B, G) ──RNA encoder──> (B, d_rna) ──proj_rna──> z_rna (B, D) ──┘   (learned temperature)

Loss = contrastive_weight · InfoNCE + impute_weight · RNA likelihood (+ mask_weight · Atacformer's
masked-bin state loss, so the ATAC encoder does not forget). The imputation likelihood is ``"nb"``
(negative binomial, per-gene dispersion, mean = softmax · library size as in scVI), ``"poisson"``, or
``"mse"`` on log-normalised values.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._atomic import atomic_path, write_json
from .batch import PackedBatch
from .model import Atacformer
from .rna import (
    GeneVocab,
    HFRnaEncoder,
    RnaEncoderConfig,
    build_rna_encoder,
    log_normalize,
)

CRAFT_CONFIG_FILE = "craft_config.json"
CRAFT_WEIGHTS_FILE = "craft.safetensors"
ATAC_DIR, RNA_MODEL_DIR = "atac", "rna_model"
LIKELIHOODS = ("nb", "poisson", "mse")


@dataclass
class CraftConfig:
    """Architecture and loss weights of a :class:`CraftModel` (the ATAC encoder has its own config)."""

    rna: RnaEncoderConfig = field(default_factory=RnaEncoderConfig)
    shared_dim: int = 128  # width of the joint space
    proj_hidden: int = 256
    init_temperature: float = 0.07  # CLIP's initial temperature
    max_logit_scale: float = 100.0  # CLIP clamps 1 / temperature at 100
    likelihood: str = "nb"  # RNA imputation: "nb" | "poisson" | "mse"
    impute_hidden: int = 256
    contrastive_weight: float = 1.0
    impute_weight: float = 1.0
    mask_weight: float = 0.0  # Atacformer's masked-bin state loss (0 = off; then only <cls> is computed)

    def __post_init__(self):
        if isinstance(self.rna, dict):
            self.rna = RnaEncoderConfig(**self.rna)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if min(self.contrastive_weight, self.impute_weight, self.mask_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if not (self.init_temperature > 0 and self.max_logit_scale > 1):
            raise ValueError("need init_temperature > 0 and max_logit_scale > 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CraftConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown CRAFT config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class CraftOutput:
    loss: torch.Tensor  # () weighted sum of ``losses``
    losses: dict[str, torch.Tensor]  # "contrastive", "impute", and "state" when mask_weight > 0
    atac_emb: torch.Tensor  # (B, D) L2-normalised joint-space embedding of the ATAC profiles
    rna_emb: torch.Tensor  # (B, D) L2-normalised joint-space embedding of the RNA profiles
    logit_scale: torch.Tensor | None = None  # () the clamped 1 / temperature used


def projection(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """(B, d_in) → Linear → GELU → Linear → (B, d_out)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def clip_loss(z_atac: torch.Tensor, z_rna: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of L2-normalised pairs (row i of each is one cell), logits scaled by ``logit_scale``."""
    logits = logit_scale * z_atac @ z_rna.T  # (B, B)
    target = torch.arange(z_atac.shape[0], device=z_atac.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def batch_foscttm(sim: torch.Tensor) -> torch.Tensor:
    """() FOSCTTM of a batch from its (B, B) similarities of L2-normalised pairs (row i, column i: one cell):
    the share of other cells more similar than the true partner, averaged over both directions."""
    true = sim.diagonal()  # (B,)
    closer = (sim > true[:, None]).float().sum() + (sim > true[None, :]).float().sum()
    return closer / (2 * sim.shape[0] * max(sim.shape[0] - 1, 1))


def nb_nll(counts: torch.Tensor, mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """Mean negative-binomial negative log-likelihood: counts (B, G), mean mu (B, G), log dispersion (G,)."""
    theta = log_theta.exp()
    eps = 1e-8
    log_p = (torch.lgamma(counts + theta) - torch.lgamma(theta) - torch.lgamma(counts + 1)
             + theta * (torch.log(theta + eps) - torch.log(theta + mu + eps))
             + counts * (torch.log(mu + eps) - torch.log(theta + mu + eps)))
    return -log_p.mean()


class CraftModel(nn.Module):
    """An ATAC encoder (:class:`Atacformer`, its ``<cls>``), an RNA encoder over ``genes``, projections to a
    shared space, a learned temperature, and an RNA-imputation head on the ATAC ``<cls>``."""

    def __init__(self, atac: Atacformer, genes: Sequence[str] | GeneVocab, config: CraftConfig | None = None):
        super().__init__()
        self.config = config = config or CraftConfig()
        self.genes = genes if isinstance(genes, GeneVocab) else GeneVocab(genes)
        self.atac = atac
        self.rna = build_rna_encoder(config.rna, self.genes.genes)
        d_atac, n_genes = atac.config.d_model, len(self.genes)
        self.proj_atac = projection(d_atac, config.proj_hidden, config.shared_dim)
        self.proj_rna = projection(self.rna.out_dim, config.proj_hidden, config.shared_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.impute_head = projection(d_atac, config.impute_hidden, n_genes)  # (B, d) → (B, G)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))  # NB per-gene log dispersion

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def check_data(self, uns, *, what: str = "ATAC data") -> None:
        """Raise ``ValueError`` if an AnnData's ``uns`` genome / bin size differ from the ATAC model's."""
        self.atac.check_data(uns, what=what)

    # ---------------------------------------------------------------- pieces
    def scale(self) -> torch.Tensor:
        """1 / temperature, clamped at ``max_logit_scale`` (as CLIP)."""
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def embed_atac(self, batch: PackedBatch) -> torch.Tensor:
        """(B, D) L2-normalised joint-space embeddings of ATAC cells (collated with ``mask_fraction=0``)."""
        return F.normalize(self.proj_atac(self.atac.embed(batch)).float(), dim=-1)

    def embed_rna(self, counts: torch.Tensor) -> torch.Tensor:
        """(B, D) L2-normalised joint-space embeddings of raw RNA counts (B, G) aligned to :attr:`genes`."""
        return F.normalize(self.proj_rna(self.rna(counts.to(self.device))).float(), dim=-1)

    def impute(self, batch: PackedBatch) -> torch.Tensor:
        """(B, G) imputed log-normalised expression, log1p(fraction · scale_factor), from ATAC alone."""
        return self._impute_log(self.impute_head(self.atac.embed(batch)))

    def _impute_log(self, out: torch.Tensor) -> torch.Tensor:
        if self.config.likelihood == "mse":
            return out.float().clamp_min(0)
        return torch.log1p(out.float().softmax(-1) * self.config.rna.scale_factor)

    def impute_loss(self, out: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Loss of imputation-head outputs (B, G) against raw counts (B, G) under ``config.likelihood``."""
        counts = counts.float()
        if self.config.likelihood == "mse":
            return F.mse_loss(out.float(), log_normalize(counts, self.config.rna.scale_factor))
        mu = out.float().softmax(-1) * counts.sum(-1, keepdim=True)  # (B, G)
        if self.config.likelihood == "poisson":
            return F.poisson_nll_loss(mu, counts, log_input=False, full=False, eps=1e-8)
        return nb_nll(counts, mu, self.log_theta)

    # ---------------------------------------------------------------- forward
    def forward(self, atac_batch: PackedBatch, rna_counts: torch.Tensor) -> CraftOutput:
        """Loss of B paired cells: ``atac_batch`` (B cells) and ``rna_counts`` (B, G) raw counts, same order."""
        c = self.config
        counts = rna_counts.to(self.device)
        if counts.shape != (atac_batch.num_cells, len(self.genes)):
            raise ValueError(f"rna_counts is {tuple(counts.shape)}, "
                             f"expected ({atac_batch.num_cells}, {len(self.genes)})")
        losses = {}
        if c.mask_weight > 0:
            out = self.atac(atac_batch)
            cls, losses["state"] = out.cell_embedding, out.losses["state"]
        else:
            cls = self.atac.embed(atac_batch)  # (B, d_atac)
        z_atac = F.normalize(self.proj_atac(cls).float(), dim=-1)  # (B, D)
        z_rna = self.embed_rna(counts)  # (B, D)
        scale = self.scale()
        losses["contrastive"] = clip_loss(z_atac, z_rna, scale)
        losses["impute"] = self.impute_loss(self.impute_head(cls), counts)
        loss = c.contrastive_weight * losses["contrastive"] + c.impute_weight * losses["impute"]
        if "state" in losses:
            loss = loss + c.mask_weight * losses["state"]
        return CraftOutput(loss=loss, losses=losses, atac_emb=z_atac, rna_emb=z_rna, logit_scale=scale.detach())

    # ---------------------------------------------------------------- persistence
    def _own_state(self) -> dict[str, torch.Tensor]:
        """Weights outside the ATAC model (and outside a Hugging Face backbone, saved on its own)."""
        skip = ("atac.", "rna.backbone.")
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith(skip)}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``craft_config.json``, ``genes.json``, ``craft.safetensors``, the ATAC model in ``atac/``
        (Atacformer's format: config, weights, vocabulary/genome) and a Hugging Face RNA backbone in ``rna_model/``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.atac.save_pretrained(directory / ATAC_DIR)
        config = self.config.to_dict()
        if isinstance(self.rna, HFRnaEncoder):
            self.rna.save_backbone(directory / RNA_MODEL_DIR)
            config["rna"]["model_dir"] = RNA_MODEL_DIR  # relative to the CRAFT directory
        self.genes.save(directory)
        with atomic_path(directory / CRAFT_WEIGHTS_FILE) as tmp:
            save_file(self._own_state(), str(tmp), metadata={"format": "pt", "genome": self.atac.config.genome})
        write_json(directory / CRAFT_CONFIG_FILE, config)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, map_location: str | torch.device = "cpu") -> CraftModel:
        """Load a model written by :meth:`save_pretrained`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (CRAFT_CONFIG_FILE, CRAFT_WEIGHTS_FILE, ATAC_DIR):
            if not (directory / name).exists():
                raise ValueError(f"{directory}: not a CRAFT model directory (no {name})")
        path = directory / CRAFT_CONFIG_FILE
        try:
            d = json.loads(path.read_text())
            if d.get("rna", {}).get("kind") == "hf":
                d["rna"]["model_dir"] = str(directory / d["rna"]["model_dir"])
            config = CraftConfig.from_dict(d)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: bad CRAFT config: {e}") from None
        model = cls(Atacformer.from_pretrained(directory / ATAC_DIR), GeneVocab.load(directory), config)
        state = load_file(str(directory / CRAFT_WEIGHTS_FILE))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("atac.", "rna.backbone."))]
        if missing or unexpected:
            raise ValueError(f"{directory / CRAFT_WEIGHTS_FILE}: weights do not match {CRAFT_CONFIG_FILE} "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        return model.to(map_location)
