"""Registration: rigid motion correction, DWI-to-perfusion coregistration and normalisation to the
ICBM152 2009a template, with ANTs.

Array in, array out: images are numpy arrays ``(X, Y, Z)`` (series ``(X, Y, Z, T)``) with a 4x4
voxel-to-world affine in nibabel's RAS+ convention (mm). World transforms are 4x4 matrices acting on
RAS mm points; each function states its direction.

Modules
-------
:mod:`.ants`
    numpy arrays and RAS affines to and from ANTs images and transforms (ITK's LPS), ITK's thread
    count, the seeded metric sampling and the rigid registration core.
:mod:`.resampling`
    Images and masks between grids under a world transform, mask coverage, head region.
:mod:`.motion`
    Rigid motion correction of a perfusion series, framewise displacement, censoring of the samples
    that resampling cannot restore.
:mod:`.coregistration`
    Rigid DWI (b0 or ADC) to perfusion registration by mutual information.
:mod:`.template`
    Affine + SyN normalisation to the template, lesion masks in template space, Dice overlap.

Importing the package loads no ANTs and changes no environment: ANTs is loaded on first use by
:func:`strokeperf.registration.ants.import_ants`.
"""
