"""Datasets: the bundled demo, the readers (a real Space Ranger-like folder written here), the registry."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from importlib.resources import files

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse

import semst_sc as semst
from semst_sc._constants import Key
from semst_sc._validation import get_counts
from semst_sc.datasets import DATASETS, DatasetInfo, fetch, read_h5ad, read_visium


# --------------------------------------------------------------------------------------------------- demo
def test_demo_is_a_real_annotated_visium_slice():
    semst.datasets.demo()  # warm the file cache, then time a load (CPU time: the test machine may be shared)
    start = time.process_time()
    adata = semst.datasets.demo()
    assert time.process_time() - start < 1.0
    assert adata.shape == (1188, 5000)
    counts = get_counts(adata)  # raw integer counts, no empty spot
    assert counts.dtype == np.float32 and isinstance(adata.X, sparse.csr_matrix)
    assert adata.obsm[Key.obsm.spatial].shape == (1188, 2)
    labels = adata.obs[semst.datasets.DEMO_ANNOTATION]
    assert sorted(labels.cat.categories) == [f"Layer{i}" for i in range(1, 7)] + ["WM"]
    assert labels.value_counts().min() >= 60
    assert adata.var_names.is_unique and {"MBP", "PCP4", "SNAP25"} <= set(adata.var_names)
    # every call gives a fresh object
    other = semst.datasets.demo()
    other.obs["x"] = 1
    assert "x" not in adata.obs


def test_demo_ships_with_its_licence():
    text = (files("semst_sc.datasets") / "data" / "LICENSE-DATA").read_text()
    assert "BSD 3-Clause" in text and "Princeton University" in text and "Maynard" in text


def test_demo_is_a_subset_of_the_shared_slice(shared_data):
    full = ad.read_h5ad(shared_data / "dlpfc_151673.h5ad")
    demo = semst.datasets.demo()
    sub = full[demo.obs_names, demo.var_names]
    assert (sparse.csr_matrix(sub.X) != demo.X).nnz == 0
    np.testing.assert_array_equal(np.asarray(sub.obsm["spatial"]), demo.obsm["spatial"])
    assert (
        sub.obs["layer_guess_reordered"].astype(str) == demo.obs["layer_guess_reordered"].astype(str)
    ).all()


@pytest.mark.slow
def test_demo_rebuilds_identically(shared_data, tmp_path):
    from semst_sc.datasets._demo import DEMO_FILE
    from semst_sc.datasets._make_demo import make_demo

    out = make_demo(shared_data / "dlpfc_151673.h5ad", tmp_path / "demo.h5ad")
    shipped = files("semst_sc.datasets") / "data" / DEMO_FILE
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(shipped.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------- read_h5ad
def test_read_h5ad_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file at"):
        read_h5ad(tmp_path / "missing.h5ad")
    with pytest.raises(IsADirectoryError, match="read_visium"):
        read_h5ad(tmp_path)
    text = tmp_path / "table.h5ad"
    text.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        read_h5ad(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ValueError, match="could not be read as AnnData"):
        read_h5ad(other)


def test_read_h5ad_reads(tmp_path):
    adata = semst.datasets.demo()[:50].copy()
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = read_h5ad(tmp_path / "a.h5ad")
    assert back.shape == (50, 5000) and (back.X != adata.X).nnz == 0


# --------------------------------------------------------------------------------------------- read_visium
def _space_ranger_folder(root, *, header=True, images=True, n_spots=40):
    """A small Space Ranger output folder in the real file formats (10x HDF5 v3 matrix, spatial/)."""
    rng = np.random.default_rng(0)
    genes = ["MBP", "PCP4", "SNAP25", "MBP", "GFAP", "PLP1"]  # one duplicated symbol, as in real data
    ids = [f"ENSG0000000000{i}" for i in range(len(genes))]
    counts = rng.poisson(2.0, size=(n_spots, len(genes))).astype(np.int32)
    counts[:, 0] += 1
    barcodes = [f"{''.join(rng.choice(list('ACGT'), 16))}-1" for _ in range(n_spots)]
    csc = sparse.csc_matrix(counts.T)  # genes x spots, stored by spot as in 10x files
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "filtered_feature_bc_matrix.h5", "w") as f:
        f.attrs["library_ids"] = np.array([b"slice_A"])
        f.attrs["chemistry_description"] = b"Spatial 3' v1"
        f.attrs["software_version"] = b"spaceranger-2.0.0"
        m = f.create_group("matrix")
        m["barcodes"] = np.array(barcodes, dtype="S")
        m["data"] = csc.data.astype(np.int32)
        m["indices"] = csc.indices.astype(np.int64)
        m["indptr"] = csc.indptr.astype(np.int64)
        m["shape"] = np.array([len(genes), n_spots], dtype=np.int32)
        feat = m.create_group("features")
        feat["_all_tag_keys"] = np.array([b"genome"])
        feat["feature_type"] = np.array([b"Gene Expression"] * len(genes))
        feat["genome"] = np.array([b"GRCh38"] * len(genes))
        feat["id"] = np.array(ids, dtype="S")
        feat["name"] = np.array(genes, dtype="S")
    spatial = root / "spatial"
    spatial.mkdir()
    array_row, array_col = np.divmod(np.arange(n_spots), 8)
    pos = pd.DataFrame(
        {
            "barcode": [*barcodes[::-1], "AAAAAAAAAAAAAAAA-1"],  # other order, plus a spot off the matrix
            "in_tissue": 1,
            "array_row": [*array_row[::-1], 99],
            "array_col": [*(array_col[::-1] * 2), 99],
            "pxl_row_in_fullres": [*(1000 + 120 * array_row[::-1]), 1],
            "pxl_col_in_fullres": [*(2000 + 137 * array_col[::-1]), 1],
        }
    )
    if header:
        pos.to_csv(spatial / "tissue_positions.csv", index=False)
    else:
        pos.to_csv(spatial / "tissue_positions_list.csv", index=False, header=False)
    (spatial / "scalefactors_json.json").write_text(
        json.dumps(
            {
                "tissue_hires_scalef": 0.15,
                "tissue_lowres_scalef": 0.045,
                "spot_diameter_fullres": 89.4,
                "fiducial_diameter_fullres": 144.4,
            }
        )
    )
    if images:
        for name, size in (("tissue_hires_image.png", 60), ("tissue_lowres_image.png", 20)):
            Image.fromarray(rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)).save(spatial / name)
    return counts, barcodes, genes, array_row, array_col


@pytest.mark.parametrize(("header", "images"), [(True, True), (False, False), (True, False)])
def test_read_visium(tmp_path, header, images):
    folder = tmp_path / "outs"
    counts, barcodes, _, array_row, array_col = _space_ranger_folder(folder, header=header, images=images)
    if images:
        adata = read_visium(folder)
    else:
        with pytest.warns(UserWarning, match="reading without images"):
            adata = read_visium(folder)
    assert list(adata.obs_names) == barcodes
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert adata.var_names.is_unique and list(adata.var_names) == [
        "MBP",
        "PCP4",
        "SNAP25",
        "MBP-1",
        "GFAP",
        "PLP1",
    ]
    assert list(adata.var["gene_ids"])[:2] == ["ENSG00000000000", "ENSG00000000001"]
    # obsm['spatial'] is (x, y) = (pxl_col_in_fullres, pxl_row_in_fullres)
    expected = np.column_stack([2000 + 137 * array_col, 1000 + 120 * array_row]).astype(float)
    np.testing.assert_array_equal(adata.obsm[Key.obsm.spatial], expected)
    np.testing.assert_array_equal(adata.obs["array_row"].to_numpy(), array_row)
    assert adata.uns["spatial"]["slice_A"]["scalefactors"]["tissue_hires_scalef"] == 0.15
    assert ("images" in adata.uns["spatial"]["slice_A"]) == images
    semst.gr.spatial_graph(adata, mode="knn", n_neighbors=4)  # ready for the graph functions
    semst.pp.preprocess(adata, n_top_genes=6, min_cells=1)


def test_read_visium_without_images_flag(tmp_path):
    folder = tmp_path / "outs"
    _space_ranger_folder(folder)
    adata = read_visium(folder, load_images=False, library_id="mine")
    assert "images" not in adata.uns["spatial"]["mine"]
    assert adata.obsm[Key.obsm.spatial].shape == (40, 2)


def test_read_visium_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        read_visium(tmp_path / "nope")
    folder = tmp_path / "outs"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no filtered_feature_bc_matrix\.h5"):
        read_visium(folder)
    _space_ranger_folder(tmp_path / "full")
    (tmp_path / "full" / "spatial" / "tissue_positions.csv").unlink()
    with pytest.raises(FileNotFoundError, match="tissue_positions"):
        read_visium(tmp_path / "full")


def test_read_visium_barcodes_without_positions(tmp_path):
    folder = tmp_path / "outs"
    _space_ranger_folder(folder, images=False)
    pos = pd.read_csv(folder / "spatial" / "tissue_positions.csv")
    pos.iloc[1:].to_csv(folder / "spatial" / "tissue_positions.csv", index=False)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"1 barcodes .* have no row"):
        read_visium(folder)


# ------------------------------------------------------------------------------------------------ registry
def test_registry_entries_are_complete():
    assert len(DATASETS) >= 5
    for name, info in DATASETS.items():
        assert isinstance(info, DatasetInfo)
        assert info.url.startswith("https://"), name
        assert info.filename and "/" not in info.filename
        assert info.license and info.description
        assert info.sha256 is None or (len(info.sha256) == 64 and int(info.sha256, 16) >= 0)


def _register(monkeypatch, url, sha256=None, name="test_file"):
    monkeypatch.setitem(
        DATASETS,
        name,
        DatasetInfo(url=url, filename="payload.bin", sha256=sha256, license="test", description="t"),
    )
    return name


def test_fetch_local_url_with_checksum(tmp_path, monkeypatch):
    source = tmp_path / "source.bin"
    payload = np.random.default_rng(0).bytes(3 * 2**20 + 17)  # more than one read block
    source.write_bytes(payload)
    name = _register(monkeypatch, source.as_uri(), hashlib.sha256(payload).hexdigest())
    out = fetch(name, tmp_path / "dl")
    assert out == tmp_path / "dl" / "payload.bin" and out.read_bytes() == payload
    source.unlink()  # a second call reuses the file, no download
    assert fetch(name, tmp_path / "dl") == out
    monkeypatch.setenv("SEMST_DATA_DIR", str(tmp_path / "env"))
    assert semst.datasets.default_data_dir() == tmp_path / "env"


def test_fetch_wrong_checksum_removes_the_file(tmp_path, monkeypatch):
    source = tmp_path / "source.bin"
    source.write_bytes(b"not what the registry says")
    name = _register(monkeypatch, source.as_uri(), "0" * 64)
    with pytest.raises(ValueError, match="expected 0000"):
        fetch(name, tmp_path / "dl")
    assert not any((tmp_path / "dl").iterdir())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/file.h5", "http://10.255.255.1:81/file.h5"])
def test_fetch_offline_fails_fast_with_advice(tmp_path, monkeypatch, url):
    name = _register(monkeypatch, url.format(port=_closed_port()))
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="download the file elsewhere and put it at"):
        fetch(name, tmp_path / "dl", timeout=1.0)
    assert time.perf_counter() - start < 10
    assert not any((tmp_path / "dl").iterdir())


def test_fetch_bad_arguments(tmp_path):
    with pytest.raises(KeyError, match="unknown data set 'nope'"):
        fetch("nope", tmp_path)
    with pytest.raises(ValueError, match="timeout"):
        fetch("starmap_mvc", tmp_path, timeout=0)
