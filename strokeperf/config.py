"""Run configuration: method parameters and their defaults, from a TOML file and the command line.

Precedence: command-line options > ``--config FILE.toml`` > defaults below. The defaults of
:class:`Parameters` are the one source of them: the command line's help quotes them
(:mod:`strokeperf.cli.parser`). The resolved parameters are recorded in every derivative sidecar
(``Parameters``).

A config file holds the same names as the options, with underscores::

    deconvolution = "bcsvd"
    denoise_fwhm_mm = 5.0
    core_rcbf = 0.30
    tmax_thresholds = [4, 6, 8, 10]
    motion_correction = true
    leakage_correction = false
    normalise = false
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from strokeperf import concentration, lesions
from strokeperf.errors import MissingInputError, StrokeperfError


class ConfigError(StrokeperfError):
    """A config file or option value is invalid (command-line usage error, exit code 2)."""

    exit_code = 2


@dataclass
class Parameters:
    """Method parameters of one run (units in the names; each default is the stage module's
    constant, where its source is cited)."""

    frame_interval: float | None = None
    deconvolution: str = "parametric"
    deconvolution_options: dict = field(default_factory=dict)
    denoise_fwhm_mm: float = concentration.DENOISE_FWHM_MM
    core_rcbf: float = lesions.CORE_RCBF_THRESHOLD
    #: Smoothing of rCBF within tissue before the core threshold, FWHM in mm (0: none).
    core_rcbf_fwhm_mm: float = lesions.CORE_RCBF_FWHM_MM
    core_adc: float = lesions.CORE_ADC_THRESHOLD
    tmax_thresholds: tuple = lesions.TMAX_THRESHOLDS_S
    min_cluster_ml: float = lesions.MIN_CLUSTER_ML
    vessel_cbv: float = lesions.VESSEL_CBV_ML_100G
    #: Rigid motion correction of every perfusion series (``--no-motion-correction`` turns it off).
    motion_correction: bool = True
    #: DSC only: Boxerman-Schmainda-Weisskoff contrast-leakage correction of delta-R2*.
    leakage_correction: bool = False
    #: Directory laid out like strokeperf's output: a session's ``desc-<mod>AIF_mask`` found there
    #: replaces the automatic AIF (``--aif-mask-dir``).
    aif_mask_dir: str | None = None
    #: Spatial normalisation to the ICBM152 2009a template (``--normalise``): lesion masks in template
    #: space, transforms, and the cohort's lesion-frequency maps. Off by default (about 10 s/session).
    normalise: bool = False

    def validate(self) -> "Parameters":
        """Check ranges a user could get wrong; raise :class:`ConfigError` with the reason."""
        if self.frame_interval is not None and not self.frame_interval > 0:
            raise ConfigError(f"--frame-interval must be > 0 s, got {self.frame_interval}")
        if not 0 < self.core_rcbf < 1:
            raise ConfigError(f"core_rcbf must be between 0 and 1, got {self.core_rcbf}")
        if not 400 <= self.core_adc <= 800:
            raise ConfigError(f"core_adc must be 400-800 x 1e-6 mm^2/s, got {self.core_adc}")
        thresholds = tuple(float(t) for t in self.tmax_thresholds)
        if lesions.HYPOPERFUSION_TMAX_S not in thresholds or 10.0 not in thresholds:
            raise ConfigError("tmax_thresholds must include 6 and 10 s (mismatch and HIR use them)")
        self.tmax_thresholds = tuple(sorted(thresholds))
        for name in ("motion_correction", "leakage_correction", "normalise"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.aif_mask_dir is not None:
            if not Path(self.aif_mask_dir).is_dir():
                raise MissingInputError(self.aif_mask_dir, "AIF mask directory not found")
            self.aif_mask_dir = str(Path(self.aif_mask_dir).resolve())
        for name in ("min_cluster_ml", "denoise_fwhm_mm", "core_rcbf_fwhm_mm"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.vessel_cbv > 0:
            raise ConfigError(f"vessel_cbv must be > 0, got {self.vessel_cbv}")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tmax_thresholds"] = list(d["tmax_thresholds"])
        return d


def load_parameters(config_file: str | Path | None = None, **overrides) -> Parameters:
    """Defaults, updated from ``config_file`` (TOML) and then from non-None ``overrides``."""
    values: dict = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise MissingInputError(path, "config file not found")
        try:
            values.update(tomllib.loads(path.read_text()))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        known = {f.name for f in fields(Parameters)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Parameters(**values).validate()
