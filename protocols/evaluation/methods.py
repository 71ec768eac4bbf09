"""How each score is computed, in words a clinician can check (shown in every report)."""

METHODS = {
    "Column shapes": (
        "For each column: 1 minus the total variation distance between the category "
        "frequencies of the real and synthetic records (a missing value counts as its own "
        "category), or 1 minus the Kolmogorov-Smirnov statistic between the non-missing "
        "values of numbers and dates. 1 means identical distributions. The headline is the "
        "mean over columns."),
    "Pairwise structure": (
        "For each pair of columns: 1 - |rho_real - rho_synthetic| / 2 with Spearman's rho for "
        "two numeric columns, and 1 minus the total variation distance between the two joint "
        "frequency tables for a pair that involves a category (numbers cut into five bins at "
        "quantiles of the real values). The headline is the mean over pairs."),
    "Strong associations kept": (
        "Among the pairs whose real association (Spearman's rho for two numbers, bias-"
        "corrected Cramer's V otherwise) is at least 0.2 in size, the share for which the "
        "synthetic association has the same direction and is within half of the real one."),
    "Utility (TSTR)": (
        "A model for the declared target is trained on the synthetic cohort and tested on real "
        "records (TSTR), and the same model is trained and tested on real records (TRTR). "
        "Categories: logistic regression, ROC AUC, ratio AUC_TSTR / AUC_TRTR. Numbers: ridge "
        "regression, mean absolute error, ratio MAE_TRTR / MAE_TSTR. 1 means parity."),
    "Survival": (
        "Kaplan-Meier curves of the declared time and event: the largest and the mean absolute "
        "gap between the real and synthetic curves, read at 200 evenly spaced times up to the "
        "shorter follow-up (records with a missing time or event are left out). Cox "
        "proportional-hazards models (penalizer 0.01) fitted on real and on synthetic records "
        "with the same covariates; direction agreement is the share of significant real hazard "
        "ratios (p < 0.05; all of them if none is significant) whose synthetic counterpart "
        "points the same way. A covariate that does not vary in one data set is left out of "
        "that data set's model."),
    "Exact copies": "Synthetic rows identical to a real record in every modelled column.",
    "DCR share": (
        "Distance to closest record, in the schema's scaled encoding: the share of synthetic "
        "rows that lie closer to a training record than to a held-out record, with equally "
        "many of each (a tie counts half). 0.5 means the cohort is no closer to the records it "
        "learned from."),
    "Membership inference AUC": (
        "An attacker scores each real record by its distance to the nearest synthetic row (closer "
        "means 'used in training') and tries to tell training records from as many held-out "
        "ones; the ROC AUC of that guess is 0.5 when the attack is a coin flip."),
    "Bias": (
        "Every declared category's share of rows, real against synthetic; a category is "
        "flagged 'erased' when the cohort has none of it and 'shrunk' when its share fell "
        "below half of the real share."),
    "Privacy of these scores": (
        "The scores are computed from real records without differential privacy. This report "
        "stays with whoever holds those records; in federated evaluation a hospital returns "
        "only its scalar scores, never figures or records."),
}
