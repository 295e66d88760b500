"""The bundled demo slice (a subset of DLPFC 151673, BSD-3-Clause; see ``data/LICENSE-DATA``)."""

from __future__ import annotations

from importlib.resources import as_file, files

import anndata as ad
from anndata import AnnData

DEMO_FILE = "dlpfc_151673_demo.h5ad"
#: Column of ``obs`` with the expert layer annotation of the demo (for scoring only, never training).
DEMO_ANNOTATION = "layer_guess_reordered"


def demo() -> AnnData:
    """A small real Visium slice that ships with the package: 1188 spots x 5000 genes of DLPFC 151673.

    A window of slice 151673 of the human dorsolateral prefrontal cortex (spatialLIBD, Maynard et al.
    2021, Nature Neuroscience) spanning the whole cortex: every spot of ``array_row`` 4-52 and
    ``array_col`` 14-62, with all seven annotated regions (Layer1-Layer6 and white matter), and the 5000
    genes detected in the most of those spots. Redistributed under BSD-3-Clause (copyright 2023 Princeton
    University, as shipped in the ``paste2`` 1.0.1 source distribution); the licence text is in
    ``semst_sc/datasets/data/LICENSE-DATA`` and ``semst_sc/datasets/_make_demo.py`` rebuilds the file.

    Returns
    -------
    A new AnnData on every call, with

    - ``X`` - raw UMI counts, CSR float32;
    - ``obsm['spatial']`` - full-resolution pixel coordinates (spot pitch about 137 px);
    - ``obs['layer_guess_reordered']`` - the expert annotation, for evaluation only;
    - ``obs['array_row']``, ``obs['array_col']`` - Visium array positions;
    - ``var['gene_ids']`` - Ensembl ids (``var_names`` are gene symbols).
    """
    resource = files("semst_sc.datasets") / "data" / DEMO_FILE
    with as_file(resource) as path:
        if not path.exists():  # pragma: no cover - a broken installation
            raise FileNotFoundError(
                f"the bundled demo file {DEMO_FILE} is missing from the installation ({path}); reinstall "
                "semst-sc or rebuild it with `python -m semst_sc.datasets._make_demo`."
            )
        return ad.read_h5ad(path)
