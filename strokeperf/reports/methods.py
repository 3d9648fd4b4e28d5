"""Methods text generated from the parameters a run used, as fMRIPrep's and ASLPrep's boilerplate.

One function per workflow returns the methods paragraph, ready to paste: :func:`ctp_methods`
(:mod:`strokeperf.workflows.ctp`) and :func:`dsc_methods` (:mod:`strokeperf.workflows.dsc`), with
the works each cites from :func:`ctp_references` and :func:`dsc_references`. Every value a user can
set (:class:`strokeperf.config.Parameters`) is stated as the run used it. This is the one source of
the methods prose: the participant report's methods section, the README's "Methods text
(generated)" excerpt and the datasink's sidecar ``Method`` strings (:func:`motion_correction_methods`,
:func:`diffusion_registration_methods`, :func:`normalisation_methods`) take their text from here.

Regenerate the README excerpt with ``python -m strokeperf.reports`` (the default paragraphs
and their references, as Markdown).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

from strokeperf import brainmask, kinetics, lesions
from strokeperf.deconvolution import neighbourhood
from strokeperf.registration import motion
from strokeperf.config import Parameters

#: Works cited by the methods text: key -> (in-text label, reference list entry).
REFERENCES = {
    "albers2018": ("Albers et al. 2018", "Albers GW et al. (DEFUSE 3). N Engl J Med 2018;378:708."),
    "arenillas2018": ("Arenillas et al. 2018",
                      "Arenillas JF et al. (CBV index). Stroke 2018;49:1398."),
    "avants2008": ("Avants et al. 2008",
                   "Avants BB et al. (symmetric normalisation, SyN). Med Image Anal 2008;12:26."),
    "axel1980": ("Axel 1980", "Axel L (CT concentration from enhancement). Radiology 1980;137:679."),
    "besag1974": ("Besag 1974", "Besag J (neighbourhood priors). J R Stat Soc B 1974;36:192."),
    "boutelier2012": ("Boutelier et al. 2012",
                      "Boutelier T et al. (Bayesian perfusion estimation). Med Image Anal "
                      "2012;16:1304."),
    "boxerman2006": ("Boxerman et al. 2006",
                     "Boxerman JL et al. (contrast-leakage correction). AJNR Am J Neuroradiol "
                     "2006;27:859."),
    "brummer1993": ("Brummer et al. 1993",
                    "Brummer ME et al. (MR brain segmentation). IEEE Trans Med Imaging 1993;12:153."),
    "calamante2000": ("Calamante et al. 2000",
                      "Calamante F et al. (bolus dispersion). Magn Reson Med 2000;44:466."),
    "calamante2003": ("Calamante et al. 2003",
                      "Calamante F et al. (Tikhonov deconvolution, L-curve). Magn Reson Med "
                      "2003;50:1237."),
    "calamante2010": ("Calamante et al. 2010",
                      "Calamante F et al. (Tmax with dispersion). Stroke 2010;41:1169."),
    "campbell2011": ("Campbell et al. 2011",
                     "Campbell BCV et al. (CT perfusion core, rCBF < 30 %). Stroke 2011;42:3435."),
    "fluckiger2009": ("Fluckiger et al. 2009",
                      "Fluckiger JU et al. (model-based blind AIF estimation). Magn Reson Med "
                      "2009;62:1477."),
    "fonov2011": ("Fonov et al. 2011",
                  "Fonov VS et al. (ICBM152 2009 template). NeuroImage 2011;54:313."),
    "knutsson2010": ("Knutsson et al. 2010",
                     "Knutsson L et al. (venous partial-volume correction). Magn Reson Imaging "
                     "2010;28:1."),
    "lansberg2012": ("Lansberg et al. 2012",
                     "Lansberg MG et al. (DEFUSE 2). Lancet Neurol 2012;11:860."),
    "ma2019": ("Ma et al. 2019", "Ma H et al. (EXTEND). N Engl J Med 2019;380:1795."),
    "mattes2003": ("Mattes et al. 2003",
                   "Mattes D et al. (mutual-information registration). IEEE Trans Med Imaging "
                   "2003;22:120."),
    "mouridsen2006aif": ("Mouridsen et al. 2006a",
                         "Mouridsen K et al. (automatic AIF selection). Magn Reson Med 2006;55:524."),
    "mouridsen2006model": ("Mouridsen et al. 2006b",
                           "Mouridsen K et al. (parametric deconvolution, gamma residue). "
                           "NeuroImage 2006;33:570."),
    "muschelli2015": ("Muschelli et al. 2015",
                      "Muschelli J et al. (CT skull stripping). NeuroImage 2015;114:379."),
    "nogueira2018": ("Nogueira et al. 2018", "Nogueira RG et al. (DAWN). N Engl J Med 2018;378:11."),
    "olivot2014": ("Olivot et al. 2014",
                   "Olivot JM et al. (hypoperfusion intensity ratio). Stroke 2014;45:1018."),
    "ostergaard1996": ("Østergaard et al. 1996",
                       "Østergaard L et al. (indicator-dilution deconvolution). Magn Reson Med "
                       "1996;36:715."),
    "power2012": ("Power et al. 2012",
                  "Power JD et al. (framewise displacement). NeuroImage 2012;59:2142."),
    "power2014": ("Power et al. 2014",
                  "Power JD et al. (censoring of moved frames). NeuroImage 2014;84:320."),
    "purushotham2015": ("Purushotham et al. 2015",
                        "Purushotham A et al. (ADC core threshold). Int J Stroke 2015;10:348."),
    "rempp1994": ("Rempp et al. 1994",
                  "Rempp KA et al. (haematocrit and density). Radiology 1994;193:637."),
    "rorden2004": ("Rorden & Karnath 2004",
                   "Rorden C, Karnath HO (lesion overlap maps). Nat Rev Neurosci 2004;5:813."),
    "rosen1990": ("Rosen et al. 1990",
                  "Rosen BR et al. (DSC-MRI delta-R2*). Magn Reson Med 1990;14:249."),
    "sourbron2004": ("Sourbron et al. 2004",
                     "Sourbron S et al. (Tikhonov deconvolution, GCV). Magn Reson Med "
                     "2004;52:209."),
    "vincent1993": ("Vincent 1993",
                    "Vincent L (morphological reconstruction). IEEE Trans Image Process "
                    "1993;2:176."),
    "wu2003": ("Wu et al. 2003",
               "Wu O et al. (block-circulant and oscillation-index SVD). Magn Reson Med "
               "2003;50:164."),
}

#: ``--deconvolution`` method -> (description for the methods text, short name or "", works cited).
DECONVOLUTION_TEXT = {
    "parametric": ("a Bayesian fit of a tracer-kinetic model", "parametric deconvolution",
                   ("mouridsen2006model", "boutelier2012")),
    "bcsvd": ("block-circulant singular value decomposition with a per-voxel truncation chosen by "
              "the oscillation index", "oSVD", ("wu2003",)),
    "csvd": ("block-circulant singular value decomposition with one global truncation threshold",
             "cSVD", ("wu2003",)),
    "ssvd": ("truncated singular value decomposition of the lower-triangular convolution matrix",
             "sSVD", ("ostergaard1996",)),
    "tikhonov": ("block-circulant Tikhonov regularisation with a per-voxel parameter chosen by "
                 "the L-curve or generalised cross-validation", "",
                 ("calamante2003", "sourbron2004")),
}


@dataclass
class _Text:
    """Sentences of a methods paragraph and the works they cite, in order of first citation."""

    sentences: list[str] = field(default_factory=list)
    cited: list[str] = field(default_factory=list)

    def cite(self, *keys: str) -> str:
        """In-text labels of ``keys`` ("Wu et al. 2003; ..."), recorded as cited."""
        for key in keys:
            if key not in self.cited:
                self.cited.append(key)
        return "; ".join(REFERENCES[key][0] for key in keys)

    def add(self, sentence: str) -> None:
        self.sentences.append(sentence)

    @property
    def paragraph(self) -> str:
        return " ".join(self.sentences)

    @property
    def references(self) -> list[str]:
        return [REFERENCES[key][1] for key in self.cited]


def _number(value: float) -> str:
    """``0.30`` for a two-decimal value, else the shortest form (``0.275``, ``5``)."""
    value = float(value)
    return f"{value:.2f}" if round(value, 2) == value and value < 1 else f"{value:g}"


def _seconds(values) -> str:
    """``4, 6, 8 and 10`` from thresholds in s."""
    items = [f"{float(v):g}" for v in values]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


# --- steps shared by the workflows ----------------------------------------------------------------

def _timing(text: _Text, p: Parameters, series: str, extra: str = "") -> None:
    given = (f"; where the sidecar gave no timing, frames were {_number(p.frame_interval)} s apart "
             f"(--frame-interval)" if p.frame_interval is not None else "")
    text.add(f"The {series} series was read with its frame timing (BIDS VolumeTiming or "
             f"RepetitionTime{given}){extra}.")


def _motion(text: _Text, p: Parameters) -> None:
    if not p.motion_correction:
        text.add("Motion correction was turned off (--no-motion-correction): the frames were "
                 "analysed as acquired.")
        return
    text.add(f"Every frame was registered rigidly to a reference frame (the frame closest to the "
             f"temporal median) by Mattes mutual information ({text.cite('mattes2003')}) in ANTs "
             f"with linear resampling; frames moved less than "
             f"{motion.NEGLIGIBLE_MOTION_MM:g} mm were left as acquired, frames displaced "
             f"through the slice plane by more than "
             f"{motion.EXCLUDE_THROUGH_PLANE_SLICE_FRACTION:g} of the slice thickness were "
             f"excluded, and in the other moved frames, samples whose resampling error predicted "
             f"for a static head exceeded {motion.CENSOR_NOISE_SD:g} noise SD (next to bone, "
             f"scalp and CSF) were replaced by linear interpolation in "
             f"time ({text.cite('power2014')}); framewise displacement "
             f"({text.cite('power2012')}) was recorded for every frame.")


def _smoothing(p: Parameters) -> str:
    if p.denoise_fwhm_mm > 0:
        return (f"smoothed within the brain by a Gaussian of {_number(p.denoise_fwhm_mm)} mm full "
                f"width at half maximum (FWHM)")
    return "not smoothed (denoise FWHM 0 mm)"


def _deconvolution(text: _Text, p: Parameters) -> None:
    description, short, keys = DECONVOLUTION_TEXT[p.deconvolution]
    cited = "; ".join(s for s in (short, text.cite(*keys)) if s)
    options = ", ".join(f"{k} = {v}" for k, v in sorted(p.deconvolution_options.items()))
    options = f" with options {options}" if options else ""
    if p.deconvolution == "parametric":
        text.add(
            f"The tissue curves were deconvolved by {description} ({cited}){options}: "
            f"the arterial input function, delayed and convolved with an exponential dispersion "
            f"kernel ({text.cite('calamante2000')}) and a gamma-distributed transit-time residue, "
            f"was scored for a dictionary of delay, dispersion, mean transit time and shape values "
            f"on the measured frame times, and each map is the posterior mean (Gaussian noise, "
            f"prior flat in Tmax). Tmax was the time of the maximum of the effective residue "
            f"({text.cite('calamante2010')}), CBF its peak, CBV the area of the fitted curve and "
            f"MTT = CBV/CBF. Where a voxel's own curve left its Tmax uncertain (posterior SD above "
            f"{neighbourhood.UNINFORMATIVE_TMAX_SD_S:g} s) and its neighbourhood read as "
            f"normal (Tmax below {neighbourhood.NEIGHBOURHOOD_NORMAL_TMAX_S:g} s), Tmax, "
            f"CBF and CBV were posterior means under a prior on Tmax from the unsmoothed curves "
            f"averaged over {neighbourhood.NEIGHBOURHOOD_FWHM_MM:g} mm FWHM (empirical Bayes; "
            f"{text.cite('besag1974')}).")
    else:
        text.add(
            f"The tissue curves were deconvolved by {description} ({cited}){options}: "
            f"CBF was the peak of the residue function, Tmax the time of its maximum, CBV the area "
            f"of the tissue curve over that of the arterial input function and MTT = CBV/CBF.")
    text.add(f"CBF and CBV were corrected for the haematocrit of large "
             f"({_number(kinetics.HEMATOCRIT_LARGE_VESSEL)}) and small vessels "
             f"({_number(kinetics.HEMATOCRIT_SMALL_VESSEL)}) and for a brain density of "
             f"{kinetics.TISSUE_DENSITY_G_PER_ML:g} g/mL ({text.cite('rempp1994')}).")


def _aif_source(p: Parameters) -> str:
    if p.aif_mask_dir:
        return ("was the mean curve of the session's own AIF mask where one was given "
                "(--aif-mask-dir), else was selected automatically")
    return "was selected automatically"


def _hypoperfusion(text: _Text, p: Parameters) -> None:
    reference, hypo = lesions.REFERENCE_TMAX_S, lesions.HYPOPERFUSION_TMAX_S
    text.add(f"Relative CBF and CBV were normalised to the mean of tissue with Tmax < "
             f"{reference:g} s; tissue excluded CSF and large vessels (CBV > "
             f"{_number(p.vessel_cbv)} mL/100 g). Hypoperfusion was Tmax > {hypo:g} s "
             f"({text.cite('albers2018')}), and lesion volumes were reported for Tmax > "
             f"{_seconds(p.tmax_thresholds)} s; in every lesion mask {_clusters(p)}.")


def _clusters(p: Parameters) -> str:
    return f"clusters smaller than {_number(p.min_cluster_ml)} mL were removed"


def _profiles(text: _Text, p: Parameters) -> None:
    hypo = lesions.HYPOPERFUSION_TMAX_S
    text.add(f"Mismatch volume was the Tmax > {hypo:g} s volume minus the core volume and the "
             f"mismatch ratio their quotient; the hypoperfusion intensity ratio was the Tmax > 10 s "
             f"volume over the Tmax > {hypo:g} s volume ({text.cite('olivot2014')}) and the CBV "
             f"index the mean relative CBV within Tmax > {hypo:g} s "
             f"({text.cite('arenillas2018')}). Eligibility was assessed by the imaging criteria "
             f"of DEFUSE 3 ({text.cite('albers2018')}), EXTEND ({text.cite('ma2019')}), DEFUSE 2 "
             f"target mismatch and malignant profile ({text.cite('lansberg2012')}) and DAWN "
             f"({text.cite('nogueira2018')}).")


def _normalisation(text: _Text, p: Parameters) -> None:
    if not p.normalise:
        text.add("The lesion masks were not normalised to a template (--normalise off).")
        return
    text.add(f"For group analysis, the perfusion baseline image (brain only) was registered to the "
             f"ICBM152 2009a template ({text.cite('fonov2011')}; 2 mm) by Mattes mutual "
             f"information, affine then symmetric normalisation (SyN, {text.cite('avants2008')}) "
             f"in ANTs, and the core and Tmax masks were warped to it (linear interpolation, "
             f"coverage >= 50 %); lesion-frequency maps are the voxel-wise fraction of sessions "
             f"with a lesion ({text.cite('rorden2004')}).")


def _diffusion_registration(text: _Text) -> None:
    text.add(f"The DWI (mean b = 0 image, else the ADC map) was registered rigidly to the DSC S0 "
             f"image by Mattes mutual information ({text.cite('mattes2003')}) in ANTs (centroid "
             f"start, 4 resolution levels) to carry the core onto the perfusion grid.")


# --- the workflows --------------------------------------------------------------------------------

def _ctp(p: Parameters) -> _Text:
    text = _Text()
    _timing(text, p, "CT perfusion")
    _motion(text, p)
    low, high = brainmask.SOFT_TISSUE_HU
    text.add(f"A brain mask was computed on the temporal median image as the largest soft-tissue "
             f"region ({low:g} to {high:g} HU) enclosed by bone (> {brainmask.BONE_HU:g} HU; "
             f"{text.cite('muschelli2015')}), and CSF was tissue below {brainmask.CSF_HU:g} HU "
             f"before contrast. The bolus arrival was detected on the whole-brain curve and the "
             f"frames before it were averaged as the baseline; the contrast concentration was the "
             f"enhancement over the baseline in HU ({text.cite('axel1980')}), {_smoothing(p)}.")
    text.add(f"The arterial input function {_aif_source(p)} among early, high and narrow curves, "
             f"excluding venous ones ({text.cite('mouridsen2006aif')}), and was scaled to the area "
             f"of the venous output function to correct partial volume "
             f"({text.cite('knutsson2010')}).")
    _deconvolution(text, p)
    _hypoperfusion(text, p)
    hypo = lesions.HYPOPERFUSION_TMAX_S
    if p.core_rcbf_fwhm_mm > 0:
        smoothing = (f"on rCBF smoothed within tissue by a Gaussian of "
                     f"{_number(p.core_rcbf_fwhm_mm)} mm FWHM, so that its per-voxel noise does not "
                     f"turn penumbra into core")
    else:
        smoothing = "on rCBF without further smoothing (core rCBF FWHM 0 mm)"
    text.add(f"The ischemic core was rCBF < {_number(p.core_rcbf)} within Tmax > {hypo:g} s "
             f"({text.cite('campbell2011')}), {smoothing}.")
    _profiles(text, p)
    _normalisation(text, p)
    return text


def _dsc(p: Parameters) -> _Text:
    text = _Text()
    _timing(text, p, "DSC-MRI", " and echo time")
    _motion(text, p)
    leakage = (f"corrected for contrast leakage ({text.cite('boxerman2006')})"
               if p.leakage_correction else "not corrected for contrast leakage")
    text.add(f"The bolus was detected on the whole-brain curve; the brain was segmented on the "
             f"mean pre-contrast image (S0; {text.cite('brummer1993')}) and CSF identified as its "
             f"bright voxels. The signal was converted to delta-R2* = -ln(S/S0)/TE "
             f"({text.cite('rosen1990')}), {leakage}, and {_smoothing(p)}.")
    text.add(f"The arterial input function {_aif_source(p)} among early, high and narrow curves, "
             f"excluding venous ones ({text.cite('mouridsen2006aif')}): where the arterial signal "
             f"reached the noise floor, from those voxels with delta-R2* censored at the floor "
             f"level, the censored frames then filled with the gamma-variate first pass under "
             f"which the brain's tissue curves were most likely given the tracer-kinetic model "
             f"(model-based blind estimation, {text.cite('fluckiger2009')}), else among voxels "
             f"whose signal stayed above the floor; it was scaled to the area of the venous output "
             f"function ({text.cite('knutsson2010')}).")
    _deconvolution(text, p)
    _hypoperfusion(text, p)
    text.add(f"The ischemic core was ADC < "
             f"{_number(p.core_adc)} x 1e-6 mm^2/s ({text.cite('purushotham2015')}; the scanner "
             f"ADC map, else ADC computed from the DWI), measured in DWI space after a 3 x 3 "
             f"in-plane running median (its trimmed rim restored where the voxel's own ADC is "
             f"below the threshold, {text.cite('vincent1993')}) and removal of CSF partial volume; "
             f"{_clusters(p)}.")
    _diffusion_registration(text)
    _profiles(text, p)
    _normalisation(text, p)
    return text


def ctp_methods(parameters: Parameters) -> str:
    """The CT perfusion workflow's methods paragraph for a run with ``parameters``."""
    return _ctp(parameters).paragraph


def ctp_references(parameters: Parameters) -> list[str]:
    """The works :func:`ctp_methods` cites for ``parameters``, in order of first citation."""
    return _ctp(parameters).references


def dsc_methods(parameters: Parameters) -> str:
    """The DSC-MRI workflow's methods paragraph (core from diffusion) for ``parameters``."""
    return _dsc(parameters).paragraph


def dsc_references(parameters: Parameters) -> list[str]:
    """The works :func:`dsc_methods` cites for ``parameters``, in order of first citation."""
    return _dsc(parameters).references


#: Modality -> (methods paragraph, references) functions.
WORKFLOW_METHODS = {"ctp": (ctp_methods, ctp_references), "dsc": (dsc_methods, dsc_references)}


def methods_text(modality: str, parameters: Parameters) -> str:
    """The methods paragraph of ``modality``'s workflow ("ctp" or "dsc")."""
    return WORKFLOW_METHODS[modality][0](parameters)


def references(modality: str, parameters: Parameters) -> list[str]:
    """The works cited by :func:`methods_text` for ``modality``."""
    return WORKFLOW_METHODS[modality][1](parameters)


def parameters_from_record(record: dict) -> Parameters:
    """The :class:`Parameters` of a sidecar's ``Parameters`` record (``Parameters.to_dict()``).

    Unknown keys are ignored and missing ones take today's defaults (a record written by an older
    version); values are taken as recorded, without validation (a recorded AIF mask directory need
    not exist any more).
    """
    known = {f.name for f in fields(Parameters)}
    return Parameters(**{k: v for k, v in record.items() if k in known})


# --- sidecar Method strings -----------------------------------------------------------------------

def motion_correction_methods() -> str:
    """The motion-correction sentence (``_motion.tsv`` sidecar ``Method``)."""
    text = _Text()
    _motion(text, Parameters(motion_correction=True))
    return text.paragraph


def diffusion_registration_methods() -> str:
    """The DWI-to-DSC registration sentence (``from-dwi_to-dsc`` transform sidecar ``Method``)."""
    text = _Text()
    _diffusion_registration(text)
    return text.paragraph


def normalisation_methods() -> str:
    """The spatial-normalisation sentence (template transform sidecar ``Method``)."""
    text = _Text()
    _normalisation(text, Parameters(normalise=True))
    return text.paragraph


# --- command line ---------------------------------------------------------------------------------

def _markdown(modality: str, parameters: Parameters) -> str:
    """The paragraph and its numbered references as Markdown (the README excerpt's format)."""
    refs = "\n".join(f"{i}. {r}" for i, r in enumerate(references(modality, parameters), 1))
    return f"{methods_text(modality, parameters)}\n\nReferences:\n\n{refs}\n"


def main(argv=None) -> int:
    """Print the default methods paragraphs (``python -m strokeperf.reports``)."""
    parser = argparse.ArgumentParser(description="Print the methods text of the default parameters "
                                                 "(the README's 'Methods text (generated)').")
    parser.add_argument("--modality", choices=sorted(WORKFLOW_METHODS), nargs="*",
                        default=sorted(WORKFLOW_METHODS))
    args = parser.parse_args(argv)
    for modality in args.modality:
        print(_markdown(modality, Parameters()))
    return 0

