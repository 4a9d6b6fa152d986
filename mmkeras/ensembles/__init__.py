"""Decision-level ensembles of separately trained models, as one exportable Keras model.

    models, records = fit_members(["seed_image", "seed_text"], datasets, epochs=4)
    ensemble = build_ensemble(models, "weighted", validation_data=datasets)
    training.evaluate(ensemble, datasets)          # same helpers as any mmkeras model

Methods: ENSEMBLE_METHODS; each is also a registered model, `ensemble_<method>`
(`mmkeras.list_models("ensemble_*")`, `mmkeras.create_model("ensemble_vote", members=...)`).
"""

from mmkeras.ensembles.builder import build_ensemble, combiner_options, ensemble_names
from mmkeras.ensembles.combiners import (COMBINERS, ENSEMBLE_METHODS, AverageCombiner,
                                         ProbabilityCombiner, ProductCombiner, StackingCombiner,
                                         VoteCombiner, WeightedCombiner)
from mmkeras.ensembles.fitting import (fit_member_weights, fit_stacking, member_probabilities,
                                       validation_arrays)
from mmkeras.ensembles.members import (check_members, fit_members, frozen_copies, load_member,
                                       load_members, member_names)

__all__ = [
    "AverageCombiner", "COMBINERS", "ENSEMBLE_METHODS", "ProbabilityCombiner", "ProductCombiner",
    "StackingCombiner", "VoteCombiner", "WeightedCombiner", "build_ensemble", "check_members",
    "combiner_options", "ensemble_names", "fit_member_weights", "fit_members", "fit_stacking",
    "frozen_copies", "load_member", "load_members", "member_names", "member_probabilities",
    "validation_arrays",
]
