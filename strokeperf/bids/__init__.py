"""The BIDS edge of strokeperf: the raw dataset read in, the derivatives' paths and names out.

Raw inputs (SPEC.md, "Inputs" and "Bad input") come in three layouts, all with an optional
``ses-<label>`` level:

- BIDS CT perfusion: ``sub-P/ses-S/ct/sub-P_ses-S[_<entities>]_ctp.nii[.gz]`` (modality ``ctp``);
- BIDS DSC-MRI: ``sub-P/ses-S/perf/sub-P_ses-S[_<entities>]_dsc.nii[.gz]`` (modality ``dsc``);
- ISLES 2024: ``sub-X/ses-01/sub-X_ses-01_ctp.nii.gz`` with no datatype folder, also below a
  ``raw_data/`` folder of the given directory (modality ``ctp``, layout ``isles24``).

Diffusion data of the same subject and session sit in ``dwi/``: a scanner ADC map ``*_ADC.nii[.gz]``
and DWI ``*_dwi.nii[.gz]`` with ``.bval``/``.bvec`` files of the same stem.

Every problem with one file is raised as one line naming the file
(:class:`~strokeperf.errors.InputError`), so the pipeline can mark that session ``failed`` and go on
with the others; problems with the dataset as a whole raise
:class:`~strokeperf.errors.NotBIDSError` or :class:`~strokeperf.errors.NoMatchError`.

Modules:

- :mod:`.discovery`: the sessions of a dataset (:class:`Session`, :func:`discover_sessions`) and
  BIDS file-name entities;
- :mod:`.sidecars`: JSON sidecars with BIDS inheritance, and the frame timing they give;
- :mod:`.images`: opening and validating NIfTI images;
- :mod:`.perfusion`: the perfusion series (:func:`load_perfusion`);
- :mod:`.diffusion`: the ADC map and the DWI with its gradients;
- :mod:`.participants`: ``participants.tsv``;
- :mod:`.derivatives`: where each output of a session goes and what it is called.
"""
