import numpy as np
import pandas as pd
import pytest
import torch

from atacformer.cli import main
from atacformer.epiattend import (
    EpiAttend,
    GenomeSpec,
    from_simulation,
    get_config,
    load_model,
    save_model,
    simulate_genome,
)
from atacformer.epiattend.inputs import load_data
from atacformer.epiattend.train import fit, loss_fn
from atacformer.epiattend.windows import WindowDataset, tile_windows

SMALL = dict(seq_len=2048, stem_channels=8, seq_channels=12, epi_hidden=8, d_model=16, n_heads=2, key_size=8,
             n_layers=1, pos_features=8, crop=4)


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    sim = simulate_genome(GenomeSpec(n_chroms=3, chrom_len=40_000), seed=1)
    return sim, sim.write(tmp_path_factory.mktemp("sim"))


def test_simulator_plants_what_it_claims(sim_files):
    sim, _ = sim_files
    t = sim.truth
    assert t.linked.any() and (~t.linked).any() and (t.distance.abs() <= 4000).all()
    assert (t.linked & (t.genes_between > 0)).any()  # some links skip a nearer gene
    g, r = sim.genes.set_index("gene"), sim.regions.set_index("region")
    # linked = responsive gene x enhancer; housekeeping genes are flat across cell types (up to noise)
    assert (g.klass[t.gene[t.linked]].to_numpy() == 1).all() and (r.kind[t.region[t.linked]] == "enhancer").all()
    flat = sim.expression.loc[g.index[g.klass == 0]]
    assert np.allclose(flat, 2.0, rtol=0.5) and flat.std(axis=1).max() < 0.5
    for _name, row in r.iterrows():  # each CRE carries its motif
        seq = sim.sequences[row.chrom][row.start : row.end]
        assert sim.motifs["E" if row.kind == "enhancer" else "D"] in seq


def test_loss_ignores_nan_targets():
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    target = torch.tensor([[float("nan"), 2.0, float("nan")]])
    assert loss_fn(pred, target).item() == 0.0
    assert loss_fn(pred, torch.full_like(target, float("nan"))).item() == 0.0
    assert loss_fn(pred, torch.tensor([[0.0, 0.0, 0.0]]), "poisson").item() > 0
    with pytest.raises(ValueError, match="loss"):
        loss_fn(pred, target, "l1")


def test_short_training_run_decreases_loss(sim_files):
    sim, paths = sim_files
    data = from_simulation(sim, paths["fasta"])
    cfg = get_config("tiny", **SMALL)
    wins = tile_windows(data.genome.chrom_sizes, ["chr1", "chr2"], seq_len=cfg.seq_len, stride=cfg.n_out * 128)
    wins = wins[wins.start >= 0].head(4)
    ds = WindowDataset(data, wins, seq_len=cfg.seq_len, crop=cfg.crop, group_cells=True)
    model = EpiAttend(cfg)
    before = np.mean([loss_fn(model.eval()(ds[i]["seq"][None], ds[i]["epi"][None]), ds[i]["target"][None]).item()
                      for i in range(len(ds))])
    result = fit(model, ds, steps=40, batch_size=4, lr=5e-3, warmup=5)
    after = np.mean([loss_fn(model(ds[i]["seq"][None], ds[i]["epi"][None]), ds[i]["target"][None]).item()
                     for i in range(len(ds))])
    assert len(result.train_loss) == 40
    assert np.mean(result.train_loss[-5:]) < 0.5 * np.mean(result.train_loss[:5])
    assert after < 0.5 * before


def test_save_load_roundtrip(tmp_path):
    model = EpiAttend(get_config("tiny", **SMALL)).eval()
    save_model(model, tmp_path / "m", meta={"cell_types": ["a"]})
    loaded, meta = load_model(tmp_path / "m")
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (1, 2048)), 4).float()
    e = torch.rand(1, 1, 16)
    assert meta == {"cell_types": ["a"]} and torch.equal(model(x, e), loaded(x, e))
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "m").iterdir())


def test_load_data_from_fragments_and_labels(sim_files, tmp_path):
    sim, paths = sim_files
    frags = tmp_path / "frags.tsv"
    frags.write_text("chr1\t100\t300\tA\t1\nchr1\t250\t260\tB\t2\nchr2\t5\t50\tA\t1\nchrUn\t5\t50\tA\t1\nchr1\t0\t10\tZ\t1\n")
    labels = tmp_path / "labels.tsv"
    labels.write_text("barcode\tcell_type\nA\tct0\nB\tct1\n")
    data, genes = load_data(paths["fasta"], fragments=frags, labels=labels, expression=paths["expression"])
    assert data.cell_types == ["ct0", "ct1"] and data.channels == ["atac"] and len(genes) == len(sim.genes)
    t = data.tracks["chr1"]  # (C, 1, n_bins)
    assert (t[0, 0, 0] == 1 and t[0, 0, 2] == 1 and t[0, 0].sum() == 2 and t[1, 0, 1] == 1 and t[1, 0, 2] == 1
            and data.tracks["chr2"][0, 0, 0] == 2)
    with pytest.raises(ValueError, match="either"):
        load_data(paths["fasta"], tracks=paths["tracks"], fragments=frags, labels=labels)


def test_cli_train_predict_links(sim_files, tmp_path):
    sim, paths = sim_files
    inputs = ["--fasta", str(paths["fasta"]), "--tracks", str(paths["tracks"]),
              "--expression", str(paths["expression"])]
    model_dir = tmp_path / "model"
    assert main(["epiattend", "train", *inputs, "--test-chroms", "chr3", "--valid-chroms", "chr2", "--steps", "2",
                 "--batch-size", "2", "-o", str(model_dir)]) == 0
    _, meta = load_model(model_dir)
    assert meta["test_chroms"] == ["chr3"] and meta["cell_types"] == sim.cell_types and len(meta["train_loss"]) == 2
    pred_path = tmp_path / "pred.tsv"
    assert main(["epiattend", "predict", *inputs, "--model", str(model_dir), "-o", str(pred_path)]) == 0
    pred = pd.read_csv(pred_path, sep="\t")
    n_genes = (sim.genes.chrom == "chr3").sum()
    assert (len(pred) == n_genes * len(sim.cell_types)
            and list(pred.columns) == ["gene", "cell_type", "observed", "predicted"])
    assert (pred.predicted >= 0).all()
    links_path = tmp_path / "links.tsv"
    assert main(["epiattend", "links", *inputs, "--model", str(model_dir), "--candidates", str(paths["regions"]),
                 "--truth", str(paths["truth"]), "-o", str(links_path)]) == 0
    links = pd.read_csv(links_path, sep="\t")
    assert {"gene", "region", "cell_type", "score", "distance", "distance_score", "abc_score"} <= set(links.columns)
    chr3_pairs = sim.truth[sim.truth.gene.str.startswith("chr3_")]
    assert len(links) == len(chr3_pairs) * len(sim.cell_types)
    # bad input is a clean error (exit code 2), not a traceback
    assert main(["epiattend", "predict", *inputs, "--model", str(tmp_path / "nope"), "-o", str(pred_path)]) == 2
