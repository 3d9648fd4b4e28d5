"""The methods text generated from the run parameters (strokeperf.reports.methods): it states every
value that shaped the run, changes with them, and README.md holds the default CTP paragraph."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from strokeperf import kinetics, lesions
from strokeperf.config import Parameters
from strokeperf.reports import methods

README = Path(__file__).resolve().parents[2] / "README.md"
DEFAULT = Parameters()


def _says(text: str, phrase: str) -> bool:
    """``phrase`` appears in ``text`` as written (numbers not as part of a longer number)."""
    return re.search(rf"(?<![\d.]){re.escape(phrase)}(?![\d])", text) is not None


@pytest.mark.parametrize("workflow", [methods.ctp_methods, methods.dsc_methods])
def test_default_text_states_every_default(workflow):
    text = workflow(DEFAULT)
    assert f"Gaussian of {DEFAULT.denoise_fwhm_mm:g} mm full width at half maximum" in text
    assert "tracer-kinetic model (parametric deconvolution;" in text
    assert "Tmax > 4, 6, 8 and 10 s" in text and DEFAULT.tmax_thresholds == (4.0, 6.0, 8.0, 10.0)
    assert f"CBV > {DEFAULT.vessel_cbv:g} mL/100 g" in text
    assert f"clusters smaller than {DEFAULT.min_cluster_ml:g} mL were removed" in text
    assert "Every frame was registered rigidly" in text  # motion correction on
    assert "were not normalised to a template" in text
    assert "was selected automatically" in text  # no --aif-mask-dir
    assert "--frame-interval" not in text  # timing from the sidecars
    for number in (lesions.REFERENCE_TMAX_S, lesions.HYPOPERFUSION_TMAX_S,
                   kinetics.HEMATOCRIT_LARGE_VESSEL, kinetics.HEMATOCRIT_SMALL_VESSEL):
        assert _says(text, f"{number:g}"), number


def test_ctp_default_states_the_core_definition():
    text = methods.ctp_methods(DEFAULT)
    assert f"rCBF < {DEFAULT.core_rcbf:.2f} within Tmax > 6 s (Campbell et al. 2011)" in text
    assert f"Gaussian of {DEFAULT.core_rcbf_fwhm_mm:g} mm FWHM" in text
    assert DEFAULT.core_rcbf_fwhm_mm == 4.0 and not _says(text, "5 mm FWHM")
    assert "ADC" not in text and "leakage" not in text  # DSC-only parameters


def test_dsc_default_states_the_core_and_leakage():
    text = methods.dsc_methods(DEFAULT)
    assert f"ADC < {DEFAULT.core_adc:g} x 1e-6 mm^2/s (Purushotham et al. 2015" in text
    assert "not corrected for contrast leakage" in text
    assert "rCBF <" not in text  # the CTP core parameters do not apply


def test_text_changes_with_the_parameters():
    ctp = methods.ctp_methods
    assert "on rCBF without further smoothing" in ctp(replace(DEFAULT, core_rcbf_fwhm_mm=0.0))
    assert "Gaussian of 3.5 mm FWHM" in ctp(replace(DEFAULT, core_rcbf_fwhm_mm=3.5))
    bcsvd = ctp(replace(DEFAULT, deconvolution="bcsvd"))
    assert "oscillation index (oSVD; Wu et al. 2003)" in bcsvd and "tracer-kinetic" not in bcsvd
    assert "(sSVD; Østergaard et al. 1996)" in ctp(replace(DEFAULT, deconvolution="ssvd"))
    assert "(cSVD; Wu et al. 2003)" in ctp(replace(DEFAULT, deconvolution="csvd"))
    assert "Calamante et al. 2003; Sourbron et al. 2004" in ctp(replace(DEFAULT,
                                                                        deconvolution="tikhonov"))
    assert "with options oscillation_index = 0.1" in ctp(
        replace(DEFAULT, deconvolution="bcsvd", deconvolution_options={"oscillation_index": 0.1}))
    off = ctp(replace(DEFAULT, motion_correction=False))
    assert "Motion correction was turned off" in off and "registered rigidly" not in off
    assert "not smoothed (denoise FWHM 0 mm)" in ctp(replace(DEFAULT, denoise_fwhm_mm=0.0))
    assert "rCBF < 0.25 within" in ctp(replace(DEFAULT, core_rcbf=0.25))
    assert "rCBF < 0.275 within" in ctp(replace(DEFAULT, core_rcbf=0.275))
    assert "Tmax > 6 and 10 s" in ctp(replace(DEFAULT, tmax_thresholds=(6.0, 10.0)))
    assert "smaller than 2.5 mL" in ctp(replace(DEFAULT, min_cluster_ml=2.5))
    assert "CBV > 8 mL/100 g" in ctp(replace(DEFAULT, vessel_cbv=8.0))
    assert "frames were 1.5 s apart (--frame-interval)" in ctp(replace(DEFAULT, frame_interval=1.5))
    assert "own AIF mask" in ctp(replace(DEFAULT, aif_mask_dir="/masks"))
    normalised = ctp(replace(DEFAULT, normalise=True))
    assert "ICBM152 2009a template (Fonov et al. 2011" in normalised
    assert "not normalised" not in normalised
    dsc = methods.dsc_methods
    assert "corrected for contrast leakage (Boxerman et al. 2006)" in dsc(
        replace(DEFAULT, leakage_correction=True))
    assert "ADC < 600 x 1e-6" in dsc(replace(DEFAULT, core_adc=600.0))


@pytest.mark.parametrize("modality", ["ctp", "dsc"])
def test_references_are_the_works_cited(modality):
    for parameters in (DEFAULT, replace(DEFAULT, deconvolution="bcsvd", normalise=True,
                                        leakage_correction=True)):
        text = methods.methods_text(modality, parameters)
        cited = [label for label, _ in methods.REFERENCES.values() if label in text]
        assert len(methods.references(modality, parameters)) == len(cited)
        assert len(set(methods.references(modality, parameters))) == len(cited)
    bcsvd = methods.references(modality, replace(DEFAULT, deconvolution="bcsvd"))
    assert methods.REFERENCES["wu2003"][1] in bcsvd
    assert methods.REFERENCES["boutelier2012"][1] not in bcsvd


def test_parameters_from_a_sidecar_record():
    record = {**DEFAULT.to_dict(), "core_rcbf": 0.25, "a_setting_of_the_future": 1}
    assert methods.parameters_from_record(record) == replace(DEFAULT, core_rcbf=0.25,
                                                             tmax_thresholds=[4.0, 6.0, 8.0, 10.0])
    assert methods.parameters_from_record({"deconvolution": "bcsvd"}).denoise_fwhm_mm == \
        DEFAULT.denoise_fwhm_mm


def test_sidecar_method_strings_are_sentences_of_the_paragraphs():
    assert methods.motion_correction_methods() in methods.ctp_methods(DEFAULT)
    assert methods.diffusion_registration_methods() in methods.dsc_methods(DEFAULT)
    assert methods.normalisation_methods() in methods.dsc_methods(replace(DEFAULT, normalise=True))


def test_readme_holds_the_generated_ctp_paragraph(capsys):
    text = README.read_text()
    block = re.search(r"<!-- methods-ctp:begin.*?-->(.*?)<!-- methods-ctp:end -->", text, re.S)
    assert block, "README.md has no methods-ctp block"
    paragraph = block.group(1).split("References:")[0]
    assert " ".join(paragraph.split()) == methods.ctp_methods(DEFAULT), \
        "README's methods text is stale: python -m strokeperf.reports --modality ctp"
    for reference in methods.ctp_references(DEFAULT):
        assert reference in block.group(1)
    assert methods.main(["--modality", "ctp"]) == 0
    assert methods.ctp_methods(DEFAULT) in capsys.readouterr().out
