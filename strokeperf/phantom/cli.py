"""``strokeperf-phantom OUT_DIR [options]``: write a phantom participant as raw BIDS with truth."""

from __future__ import annotations

import argparse
import sys
import time

from strokeperf.errors import EXIT_OK, EXIT_USAGE

from .config import MODALITIES, PhantomConfig
from .generate import generate_dataset


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="strokeperf-phantom",
        description="Generate a digital reference phantom (CT perfusion, DSC-MRI, DWI) as raw BIDS with "
                    "ground truth in OUT_DIR/truth. Options left out are drawn from --seed.")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--participant-label", default="01", help="participant label (default 01)")
    p.add_argument("--session-label", default=None, help="session label (default: no session)")
    p.add_argument("--modalities", nargs="+", choices=MODALITIES, default=["ctp"], help="default: ctp")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("acquisition")
    g.add_argument("--voxel-size", nargs=3, type=_float, metavar=("X", "Y", "Z"), help="mm, all modalities")
    g.add_argument("--slab-mm", type=_float, help="perfusion z-coverage in mm (default whole brain)")
    g.add_argument("--frame-interval", type=_float, help="s (default CTP 1.5, DSC 1.5)")
    g.add_argument("--duration", type=_float, help="s (default CTP 66, DSC 73.5)")
    g.add_argument("--irregular", action="store_true", help="irregular frames written as VolumeTiming")
    g.add_argument("--noise", type=_float, default=10.0, help="CT noise SD in HU (default 10)")
    g.add_argument("--snr", type=_float, default=50.0, help="MR SNR of grey matter (default 50; inf = none)")
    g.add_argument("--echo-time", type=_float, default=0.030, help="DSC echo time in s (default 0.030)")
    g.add_argument("--b-value", type=_float, default=1000.0, help="DWI b-value in s/mm^2 (default 1000)")
    g.add_argument("--adc-units", choices=("1e-6 mm^2/s", "mm^2/s"), default="1e-6 mm^2/s")
    g.add_argument("--dwi-rotation-deg", nargs=3, type=_float, default=(0.0, 0.0, 0.0), metavar=("RX", "RY", "RZ"))
    g.add_argument("--dwi-shift-mm", nargs=3, type=_float, default=(0.0, 0.0, 0.0), metavar=("X", "Y", "Z"))
    g.add_argument("--motion-mm", type=_float, default=0.0, help="max translation per axis (mm)")
    g.add_argument("--motion-deg", type=_float, default=0.0, help="max rotation per axis (degrees)")
    g.add_argument("--motion-fraction", type=_float, default=0.0, help="fraction of frames displaced")
    k = p.add_argument_group("tracer kinetics")
    k.add_argument("--bolus-arrival", type=_float, help="s after the first frame (default 5-12)")
    k.add_argument("--aif-peak", type=_float, help="CT arterial peak in delta-HU (default 300-500)")
    k.add_argument("--dsc-gm-peak", type=_float, help="normal GM peak delta-R2* in 1/s (default 15-20)")
    k.add_argument("--residue-shape", type=_float, default=2.5, help="1 = exponential ... inf = box (default 2.5)")
    k.add_argument("--delay-offset", type=_float, default=0.0, help="global tissue delay in s")
    k.add_argument("--normal-delay", type=_float, default=1.5, help="range of the normal delay field in s")
    k.add_argument("--normal-dispersion", type=_float, default=0.6, help="range of normal dispersion in s")
    k.add_argument("--dispersion", type=_float, default=0.0, help="global extra dispersion in s")
    k.add_argument("--venous-transit", type=_float, help="mean artery-to-sinus transit in s (default 5-8)")
    k.add_argument("--venous-peak-boost", type=_float, default=1.0, help="factor on the VOF (default 1)")
    les = p.add_argument_group("lesion")
    les.add_argument("--no-lesion", action="store_true", help="lesion-free case")
    les.add_argument("--lesion-side", choices=("L", "R"))
    les.add_argument("--lesion-volume-ml", type=_float, help="target Tmax>6 s volume in mL (default 30-150)")
    les.add_argument("--core-fraction", type=_float, help="core / Tmax>6 volume (default 0.15-0.5)")
    les.add_argument("--max-tmax", type=_float, help="Tmax at the lesion centre in s (default 12-16)")
    les.add_argument("--lesion-dispersion", type=_float, help="extra dispersion at the centre in s (default 2-4)")
    les.add_argument("--tmax-exponent", type=_float,
                     help="shape of the Tmax rise; larger = poor collaterals, higher HIR (default 1-3.5)")
    c = p.add_argument_group("clinical")
    c.add_argument("--age", type=_float)
    c.add_argument("--nihss", type=int)
    return p


def config_from_args(args: argparse.Namespace) -> PhantomConfig:
    return PhantomConfig(
        seed=args.seed, voxel_size_mm=tuple(args.voxel_size) if args.voxel_size else None, slab_mm=args.slab_mm,
        frame_interval_s=args.frame_interval, duration_s=args.duration, irregular=args.irregular,
        noise_hu=args.noise, snr=args.snr, echo_time_s=args.echo_time, b_value=args.b_value,
        adc_units=args.adc_units, dwi_rotation_deg=tuple(args.dwi_rotation_deg),
        dwi_shift_mm=tuple(args.dwi_shift_mm), motion_mm=args.motion_mm, motion_deg=args.motion_deg,
        motion_fraction=args.motion_fraction, bolus_arrival_s=args.bolus_arrival, aif_peak_hu=args.aif_peak,
        dsc_gm_peak_r2s=args.dsc_gm_peak, residue_shape=args.residue_shape, delay_offset_s=args.delay_offset,
        normal_delay_s=args.normal_delay, normal_dispersion_s=args.normal_dispersion,
        dispersion_s=args.dispersion, venous_transit_s=args.venous_transit,
        venous_peak_boost=args.venous_peak_boost, lesion=not args.no_lesion, lesion_side=args.lesion_side,
        lesion_volume_ml=args.lesion_volume_ml, core_fraction=args.core_fraction, max_tmax_s=args.max_tmax,
        lesion_dispersion_s=args.lesion_dispersion, tmax_exponent=args.tmax_exponent, age=args.age, nihss=args.nihss)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse has printed the usage error
        return int(stop.code or 0)
    try:
        config = config_from_args(args)
        started = time.perf_counter()
        result = generate_dataset(args.out_dir, config, participant=args.participant_label,
                                  session=args.session_label, modalities=args.modalities)
    except ValueError as err:
        print(f"strokeperf-phantom: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    label = result["participant_id"] + ("" if result["session_id"] == "n/a" else f" {result['session_id']}")
    print(f"strokeperf-phantom: wrote {label} ({', '.join(args.modalities)}) to {args.out_dir} "
          f"in {time.perf_counter() - started:.1f} s")
    for modality, row in result["truth"].items():
        print(f"  {modality}: core {row['core_ml']} mL, Tmax>6 {row['tmax6_ml']} mL, side {row['affected_side']}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
