"""The label spaces of the challenge datasets, by name: one definition, read by the DataModules
(training) and by ``evaluate.py`` (scoring), so the two can never disagree."""

from __future__ import annotations

from core.labels import LabelSpace

ISEG = LabelSpace.from_values({0: "background", 10: "CSF", 150: "GM", 250: "WM"})

# MRBrainS18: 9 (infarction) and 10 (other) are scored by nobody, in any mode.
MRBRAINS18_IGNORED = (9, 10)
MRBRAINS18 = LabelSpace.from_values(
    {0: "background", 1: "cortical_GM", 2: "basal_ganglia", 3: "WM", 4: "WM_lesions", 5: "CSF", 6: "ventricles",
     7: "cerebellum", 8: "brain_stem"}, ignore=MRBRAINS18_IGNORED)
# The thesis' three tissues. Cerebellum (7) and brain stem (8) are ignored: each mixes grey and
# white matter, which the 3-tissue task cannot split (MRBrainS13's 3-tissue evaluation excluded
# them too); calling them background would teach the network to erase brain tissue.
MRBRAINS18_THESIS = LabelSpace.from_groups({"background": [0], "CSF": [5, 6], "GM": [1, 2], "WM": [3, 4]},
                                           ignore=(7, 8, *MRBRAINS18_IGNORED))

# BraTS 2018-2021: 0, 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing tumour (there is no
# 3); scored as the nested regions whole tumour, tumour core and enhancing tumour.
BRATS = LabelSpace.from_values({0: "background", 1: "NCR_NET", 2: "edema", 4: "enhancing"})
BRATS_REGIONS = BRATS.with_regions({"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]})
# BraTS 2023 on (adult glioma, Sub-Saharan Africa, meningioma, metastases): the same three
# sub-regions renamed, enhancing tumour stored as 3: 1 non-enhancing tumour core (NETC), 2
# surrounding non-enhancing FLAIR hyperintensity (SNFH), 3 enhancing tissue (ET).
BRATS_2023 = LabelSpace.from_values({0: "background", 1: "NETC", 2: "SNFH", 3: "ET"})
BRATS_2023_REGIONS = BRATS_2023.with_regions({"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]})
# BraTS 2024 post-treatment glioma: 2023's values and 4, the resection cavity (RC), which lies
# outside the whole tumour and the tumour core and is scored as a region of its own.
BRATS_POST_TREATMENT = LabelSpace.from_values({0: "background", 1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"})
BRATS_POST_TREATMENT_REGIONS = BRATS_POST_TREATMENT.with_regions(
    {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3], "RC": [4]})
# FreeSurfer's aseg.mgz (recon-all's subcortical segmentation; FreeSurferColorLUT's names): every
# structure it labels, the cortex as one structure per hemisphere.
FREESURFER_ASEG_NAMES = {
    2: "Left-Cerebral-White-Matter", 3: "Left-Cerebral-Cortex", 4: "Left-Lateral-Ventricle", 5: "Left-Inf-Lat-Vent",
    7: "Left-Cerebellum-White-Matter", 8: "Left-Cerebellum-Cortex", 10: "Left-Thalamus", 11: "Left-Caudate",
    12: "Left-Putamen", 13: "Left-Pallidum", 14: "3rd-Ventricle", 15: "4th-Ventricle", 16: "Brain-Stem",
    17: "Left-Hippocampus", 18: "Left-Amygdala", 24: "CSF", 26: "Left-Accumbens-area", 28: "Left-VentralDC",
    30: "Left-vessel", 31: "Left-choroid-plexus", 41: "Right-Cerebral-White-Matter", 42: "Right-Cerebral-Cortex",
    43: "Right-Lateral-Ventricle", 44: "Right-Inf-Lat-Vent", 46: "Right-Cerebellum-White-Matter",
    47: "Right-Cerebellum-Cortex", 49: "Right-Thalamus", 50: "Right-Caudate", 51: "Right-Putamen",
    52: "Right-Pallidum", 53: "Right-Hippocampus", 54: "Right-Amygdala", 58: "Right-Accumbens-area",
    60: "Right-VentralDC", 62: "Right-vessel", 63: "Right-choroid-plexus", 72: "5th-Ventricle",
    77: "WM-hypointensities", 80: "non-WM-hypointensities", 85: "Optic-Chiasm", 251: "CC_Posterior",
    252: "CC_Mid_Posterior", 253: "CC_Central", 254: "CC_Mid_Anterior", 255: "CC_Anterior",
}
FREESURFER_ASEG = LabelSpace.from_values({0: "background", **FREESURFER_ASEG_NAMES})
# Three tissues from aseg (or aparc+aseg, whose cortex is parcels 1000-1035 / 2000-2035): CSF the
# ventricles, choroid plexus and extracerebral CSF; GM the cerebral and cerebellar cortex and the
# deep grey nuclei (thalamus, basal ganglia, hippocampus, amygdala, accumbens) and non-WM
# hypointensities; WM the cerebral and cerebellar white matter, brain stem, corpus callosum,
# optic chiasm and WM hypointensities. Ventral DC (a mix of nuclei and tracts) and vessels are
# ignored: neither tissue, and calling them background would teach the network to erase brain.
# A class is written back as its group's first value: CSF 24, GM 3, WM 2, as FreeSurfer names them.
FREESURFER_IGNORED = (28, 60, 30, 62)
FREESURFER_TISSUES = LabelSpace.from_groups({
    "background": [0],
    "CSF": [24, 4, 5, 14, 15, 31, 43, 44, 63, 72],
    "GM": [3, 42, 8, 47, 10, 11, 12, 13, 17, 18, 26, 49, 50, 51, 52, 53, 54, 58, 80,
           *range(1000, 1036), *range(2000, 2036)],
    "WM": [2, 41, 7, 46, 16, 77, 85, 251, 252, 253, 254, 255],
}, ignore=FREESURFER_IGNORED)

# The BraTS label conventions by name (BraTSDataModule's label_convention, evaluate.py's --dataset):
# (classes, regions).
BRATS_CONVENTIONS: dict[str, tuple[LabelSpace, LabelSpace]] = {
    "brats": (BRATS, BRATS_REGIONS),
    "brats2023": (BRATS_2023, BRATS_2023_REGIONS),
    "brats_post_treatment": (BRATS_POST_TREATMENT, BRATS_POST_TREATMENT_REGIONS),
}

# The names evaluate.py accepts for --dataset, with the structures each challenge scores.
DATASET_LABELS: dict[str, LabelSpace] = {
    "iseg": ISEG,
    "freesurfer_tissues": FREESURFER_TISSUES,
    "freesurfer_aseg": FREESURFER_ASEG,
    "mrbrains18": MRBRAINS18,
    "mrbrains18_thesis": MRBRAINS18_THESIS,
    **{name: regions for name, (_, regions) in BRATS_CONVENTIONS.items()},
}
