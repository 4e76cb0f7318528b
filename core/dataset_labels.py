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
    "mrbrains18": MRBRAINS18,
    "mrbrains18_thesis": MRBRAINS18_THESIS,
    **{name: regions for name, (_, regions) in BRATS_CONVENTIONS.items()},
}
