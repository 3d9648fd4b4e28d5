"""The command line's arguments (argparse) and the run's :class:`~strokeperf.config.Parameters`.

The method options are named as the fields of :class:`~strokeperf.config.Parameters`, whose
defaults the help texts quote: an option that is not given stays ``None`` so that a ``--config``
file's value can apply (precedence: command line > config file > defaults).
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from strokeperf import __version__
from strokeperf.bids.derivatives import TEMPLATE_RESOLUTION_MM, TEMPLATE_SPACE
from strokeperf.config import Parameters, load_parameters
from strokeperf.deconvolution import METHODS

#: ``--deconvolution`` choices: the methods of :data:`strokeperf.deconvolution.METHODS`, the
#: default first.
DECONVOLUTION_METHODS = (Parameters.deconvolution,
                         *sorted(set(METHODS) - {Parameters.deconvolution}))


def _default(name: str) -> str:
    """The default of a :class:`Parameters` field as the help text shows it (``4 6 8 10``)."""
    value = getattr(Parameters, name)
    if isinstance(value, (tuple, list)):
        return " ".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="strokeperf",
        description="Perfusion maps, ischemic core, Tmax lesions, mismatch and trial-eligibility "
                    "profiles from CT perfusion and DSC-MRI in a BIDS dataset.",
        epilog="Exit codes: 0 all sessions succeeded; 1 a session failed (the others are written); "
               "2 usage error; 16 not a usable BIDS dataset; 18 labels matched nothing; "
               "66 a required input file is missing or unreadable.")
    p.add_argument("bids_dir", type=Path, help="raw BIDS dataset (or ISLES 2024 folder)")
    p.add_argument("output_dir", type=Path, help="where the derivatives are written")
    p.add_argument("analysis_level", choices=["participant", "group"],
                   help="participant: process sessions and rebuild the group table; "
                        "group: only rebuild the group table and report")
    p.add_argument("--version", action="version", version=f"strokeperf {__version__}")
    sel = p.add_argument_group("selection")
    sel.add_argument("--participant-label", nargs="+", metavar="LABEL",
                     help="participants to process, with or without 'sub-'")
    sel.add_argument("--session-label", nargs="+", metavar="LABEL",
                     help="sessions to process, with or without 'ses-'")
    run = p.add_argument_group("execution")
    run.add_argument("-w", "--work-dir", type=Path, default=Path("work"),
                     help="pydra cache; reruns with the same one reuse the steps the same "
                          "strokeperf code finished (default: ./work)")
    run.add_argument("--nprocs", type=int, default=None,
                     help="processes for the cf worker (default: all cores)")
    run.add_argument("--worker", choices=["cf", "slurm", "debug"], default="cf",
                     help="pydra worker (default: cf, local processes)")
    run.add_argument("--slurm-args", default="", help="extra sbatch arguments, e.g. \"-p short\"")
    run.add_argument("--config", type=Path, help="TOML file of method parameters")
    run.add_argument("-v", "--verbose", action="store_true", help="show pydra's log messages")
    meth = p.add_argument_group("methods (each recorded in the sidecars; --config sets them too)")
    meth.add_argument("--frame-interval", type=float,
                      help="seconds between frames when the sidecar has no timing (ISLES 2024)")
    meth.add_argument("--deconvolution", choices=DECONVOLUTION_METHODS,
                      help=f"deconvolution method (default {_default('deconvolution')})")
    meth.add_argument("--denoise-fwhm", dest="denoise_fwhm_mm", type=float, metavar="MM",
                      help="in-brain spatial smoothing of the concentration (FWHM, mm; default "
                           f"{_default('denoise_fwhm_mm')}, 0 = none)")
    meth.add_argument("--core-rcbf", type=float,
                      help=f"CTP core: rCBF below this (default {_default('core_rcbf')})")
    meth.add_argument("--core-rcbf-fwhm", dest="core_rcbf_fwhm_mm", type=float, metavar="MM",
                      help="CTP core: smoothing of rCBF within tissue before the threshold "
                           f"(FWHM, mm; default {_default('core_rcbf_fwhm_mm')}, 0 = none)")
    meth.add_argument("--core-adc", type=float,
                      help="MRI core: ADC below this, 1e-6 mm^2/s "
                           f"(default {_default('core_adc')})")
    meth.add_argument("--tmax-thresholds", type=float, nargs="+", metavar="S",
                      help=f"Tmax thresholds in s (default {_default('tmax_thresholds')})")
    meth.add_argument("--min-cluster-ml", type=float,
                      help="smallest lesion cluster kept, mL "
                           f"(default {_default('min_cluster_ml')})")
    meth.add_argument("--vessel-cbv", type=float,
                      help="CBV above which a voxel is a vessel, mL/100 g "
                           f"(default {_default('vessel_cbv')})")
    meth.add_argument("--no-motion-correction", dest="motion_correction", action="store_false",
                      default=None, help="skip rigid motion correction of the perfusion series")
    meth.add_argument("--leakage-correction", action="store_true", default=None,
                      help="DSC: Boxerman-Schmainda-Weisskoff leakage correction")
    meth.add_argument("--aif-mask-dir", type=Path, metavar="DIR",
                      help="take a session's AIF from DIR/sub-P[/ses-S]/perf/"
                           "<prefix>_desc-<ctp|dsc>AIF_mask.nii.gz when it exists (e.g. an edited "
                           "earlier output); automatic selection otherwise")
    meth.add_argument("--normalise", action="store_true", default=None,
                      help="also warp each session's lesion masks to the ICBM152 2009a template "
                           f"({TEMPLATE_SPACE}, {TEMPLATE_RESOLUTION_MM} mm; about 10 s per "
                           "session) and build the cohort's lesion-frequency maps")
    return p


def parameters_from_args(args: argparse.Namespace) -> Parameters:
    """The run's parameters: defaults, then ``--config``, then every method option given (each
    option's destination is the name of its :class:`Parameters` field)."""
    given = vars(args)
    options = {f.name: given[f.name] for f in fields(Parameters) if f.name in given}
    if options["aif_mask_dir"] is not None:
        options["aif_mask_dir"] = str(options["aif_mask_dir"])
    return load_parameters(args.config, **options)
