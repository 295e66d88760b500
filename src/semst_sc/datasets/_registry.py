"""Public download locations of the data sets SemST is evaluated on, and a checked downloader.

Nothing here runs at import time or inside any other function: :func:`fetch` is the only code that opens
a network connection, and only when called. Checksums are listed where they could be verified (the
package index publishes them); ``None`` means unknown, and the download is then not verified.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from scanpy import logging as logg

#: Environment variable naming the download folder (default: ``~/.cache/semst-sc/datasets``).
DATA_DIR_ENV = "SEMST_DATA_DIR"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetInfo:
    """One downloadable file."""

    url: str
    filename: str
    sha256: str | None
    license: str
    description: str


_10X = "https://cf.10xgenomics.com/samples/spatial-exp/1.1.0"
_BREAST = "V1_Breast_Cancer_Block_A_Section_1"
_MBA = "V1_Mouse_Brain_Sagittal_Anterior"

DATASETS: dict[str, DatasetInfo] = {
    "dlpfc_151673_h5": DatasetInfo(
        url="https://spatial-dlpfc.s3.us-east-2.amazonaws.com/h5/151673_filtered_feature_bc_matrix.h5",
        filename="151673_filtered_feature_bc_matrix.h5",
        sha256=None,
        license="public data of spatialLIBD (Maynard et al. 2021, Nat Neurosci); cite the paper",
        description="DLPFC slice 151673, 10x Visium, Space Ranger filtered count matrix (spatialLIBD host).",
    ),
    "dlpfc_layer_map": DatasetInfo(
        url="https://raw.githubusercontent.com/LieberInstitute/HumanPilot/"
        "5dc52dc562893754c1db263479c573a3c3292609/10X/barcode_level_layer_map.tsv",
        filename="dlpfc_barcode_level_layer_map.tsv",
        sha256=None,
        license="public data of spatialLIBD (Maynard et al. 2021, Nat Neurosci); cite the paper",
        description="Manual layer annotation of every spot of the 12 DLPFC slices (barcode, slice, layer).",
    ),
    "paste2_sample_data": DatasetInfo(
        url="https://files.pythonhosted.org/packages/31/a9/030b7766a9d323dfa2d9a181536fed8a62c444b659554847c2afc687127d/paste2-1.0.1.tar.gz",
        filename="paste2-1.0.1.tar.gz",
        sha256="464dc77317e28df96e34ab2cd82d057411c5d62bf015faf774c926beef1b663a",
        license="BSD-3-Clause, (c) 2023 Princeton University",
        description="Source distribution of paste2 1.0.1 (PyPI, 47 MB); sample_data/ holds annotated DLPFC "
        "slices, the origin of the bundled demo.",
    ),
    "visium_breast_cancer_h5": DatasetInfo(
        url=f"{_10X}/{_BREAST}/{_BREAST}_filtered_feature_bc_matrix.h5",
        filename=f"{_BREAST}_filtered_feature_bc_matrix.h5",
        sha256=None,
        license="CC BY 4.0 (10x Genomics public data set)",
        description="Human breast cancer (block A, section 1), 10x Visium, filtered count matrix.",
    ),
    "visium_breast_cancer_spatial": DatasetInfo(
        url=f"{_10X}/{_BREAST}/{_BREAST}_spatial.tar.gz",
        filename=f"{_BREAST}_spatial.tar.gz",
        sha256=None,
        license="CC BY 4.0 (10x Genomics public data set)",
        description="Spatial folder (positions, scale factors, images) of the breast cancer slice.",
    ),
    "visium_mouse_brain_anterior_h5": DatasetInfo(
        url=f"{_10X}/{_MBA}/{_MBA}_filtered_feature_bc_matrix.h5",
        filename=f"{_MBA}_filtered_feature_bc_matrix.h5",
        sha256=None,
        license="CC BY 4.0 (10x Genomics public data set)",
        description="Mouse brain, sagittal anterior section, 10x Visium, filtered count matrix.",
    ),
    "visium_mouse_brain_anterior_spatial": DatasetInfo(
        url=f"{_10X}/{_MBA}/{_MBA}_spatial.tar.gz",
        filename=f"{_MBA}_spatial.tar.gz",
        sha256=None,
        license="CC BY 4.0 (10x Genomics public data set)",
        description="Spatial folder (positions, scale factors, images) of the mouse brain anterior slice.",
    ),
    "starmap_mvc": DatasetInfo(
        url="https://raw.githubusercontent.com/prabhakarlab/Banksy_py/"
        "318b3dce6b1d734916cc35257da9f592ab28d2f4/data/starmap/starmap_BY3_1k.h5ad",
        filename="starmap_BY3_1k.h5ad",
        sha256=None,
        license="GPL-3.0 (Banksy_py repository); data of Wang et al. 2018, Science",
        description="STARmap mouse visual cortex, 1207 cells x 1020 genes, with layer annotation.",
    ),
    "osmfish_sscortex_loom": DatasetInfo(
        url="https://raw.githubusercontent.com/drieslab/spatial-datasets/"
        "9420eb5804eacd1dd8787d7977ccc4f21ba2ab8e/data/2018_osmFISH_SScortex/raw_data/"
        "osmFISH_SScortex_mouse_all_cells.loom",
        filename="osmFISH_SScortex_mouse_all_cells.loom",
        sha256=None,
        license="MIT (drieslab/spatial-datasets); data of Codeluppi et al. 2018, Nat Methods",
        description="osmFISH mouse somatosensory cortex, all cells x 33 genes, with region annotation (loom).",
    ),
}


def default_data_dir() -> Path:
    """Where :func:`semst_sc.datasets.fetch` puts files by default.

    Returns
    -------
    ``$SEMST_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/semst-sc/datasets`` (``~/.cache/semst-sc/datasets``).
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "semst-sc" / "datasets"


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    timeout: float = 30.0,
    force: bool = False,
) -> Path:
    """Download one file of ``semst_sc.datasets.DATASETS`` (once) and return where it is.

    Parameters
    ----------
    name
        Key of ``semst_sc.datasets.DATASETS``.
    path
        Folder to put the file in; by default :func:`semst_sc.datasets.default_data_dir`.
    timeout
        Seconds to wait for the server before giving up (per connection attempt and per read).
    force
        Download again even when the file is there.

    Returns
    -------
    Path of the downloaded file. A file already present is reused (its checksum verified when known).

    Raises
    ------
    KeyError
        Unknown ``name``.
    ConnectionError
        No network, or the server did not answer in ``timeout`` seconds; the message says where to put a
        copy downloaded by other means.
    ValueError
        The checksum of the downloaded file differs from the registry's (the file is removed).
    """
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}.")
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    info = DATASETS[name]
    folder = default_data_dir() if path is None else Path(path).expanduser()
    target = folder / info.filename
    if target.is_file() and not force:
        if info.sha256 is not None and _sha256(target) != info.sha256:
            raise ValueError(
                f"{target} exists but its SHA-256 differs from the registry's; delete it or pass force=True."
            )
        return target

    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    logg.info(f"downloading {name} from {info.url} to {target}")
    digest = hashlib.sha256()
    network_errors = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)

    def unreachable(e: Exception) -> ConnectionError:
        partial.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        return ConnectionError(
            f"could not download {name} from {info.url} ({type(e).__name__}: {reason}). Without a network, "
            f"download the file elsewhere and put it at {target}."
        )

    try:
        response = urllib.request.urlopen(info.url, timeout=timeout)
    except network_errors as e:
        raise unreachable(e) from e
    try:
        with response, open(partial, "wb") as out:
            for block in iter(lambda: response.read(_CHUNK), b""):
                digest.update(block)
                out.write(block)
    except network_errors as e:
        raise unreachable(e) from e
    if info.sha256 is not None and digest.hexdigest() != info.sha256:
        partial.unlink(missing_ok=True)
        raise ValueError(
            f"the download of {name} has SHA-256 {digest.hexdigest()}, expected {info.sha256}; the file was "
            "removed. Try again, or report the changed file."
        )
    shutil.move(partial, target)
    return target
