"""Every deconvolution method on the OSIPI DSC test curves, with the collection's own convention
and tolerances.

The curves (``shared/external/osipi_dsc/dsc_data.csv``, README there) are the DSC test data of the
OSIPI DCE-DSC-MRI code collection: 14 tissue/AIF concentration pairs, CBV 2 or 4 mL/100 mL and CBF
5-70 mL/100 mL/min, no delay, no dispersion, contrast-to-noise ratio 200, 1.243 s frames. The
collection's reference convention has no haematocrit or density correction:
``CBF = max(residue) x 60 x 100`` and ``CBV = area(C_tis) / area(C_aif) x 100``
(``residue_peak`` and ``area_ratio`` of a strokeperf fit), and its tolerance is
``|measured - truth| <= atol + rtol |truth|`` with CBF atol 15, rtol 0.1 and CBV atol 1, rtol 0.1.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from strokeperf.deconvolution import METHODS

OSIPI_DIR = Path(__file__).resolve().parents[3] / "shared" / "external" / "osipi_dsc"
#: (atol, rtol) of the OSIPI collection (test/DSCmodels/DSCmodels_data.py).
CBF_TOLERANCE = (15.0, 0.1)   # mL/100 mL/min
CBV_TOLERANCE = (1.0, 0.1)    # mL/100 mL
#: Method variants: name -> (METHODS key, options); both Tikhonov criteria are tested.
VARIANTS = {name: (name, {}) for name in METHODS}
VARIANTS["tikhonov-gcv"] = ("tikhonov", {"criterion": "gcv"})


def _rows():
    path = OSIPI_DIR / "dsc_data.csv"
    if not path.is_file():
        pytest.skip(f"OSIPI DSC test data not found at {path} (shared/ folder beside the checkout)")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_osipi_dsc_curves(variant):
    rows = _rows()
    assert len(rows) == 14
    name, options = VARIANTS[variant]
    failures = []
    for row in rows:
        c_tis = np.array(row["C_tis"].split(), dtype=float)
        c_aif = np.array(row["C_aif"].split(), dtype=float)
        t = np.arange(c_tis.size) * float(row["tr"])
        fit = METHODS[name](c_aif, t, **options).fit(c_tis[None])
        cbf = fit.residue_peak[0] * 60.0 * 100.0
        cbv = fit.area_ratio[0] * 100.0
        cbf_true, cbv_true = float(row["cbf"]), float(row["cbv"])
        if abs(cbf - cbf_true) > CBF_TOLERANCE[0] + CBF_TOLERANCE[1] * cbf_true:
            failures.append(f"{row['label']}: CBF {cbf:.1f} vs {cbf_true:g}")
        if abs(cbv - cbv_true) > CBV_TOLERANCE[0] + CBV_TOLERANCE[1] * cbv_true:
            failures.append(f"{row['label']}: CBV {cbv:.2f} vs {cbv_true:g}")
    assert not failures, "; ".join(failures)
