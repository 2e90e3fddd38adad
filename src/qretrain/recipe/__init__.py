"""The measured recipe as one call: ``qretrain.compress(model, data, target="7x")``.

It sits above every stage (analysis, planner, apply, retrain, storage): it shares
the user's unlabeled images out, runs the stages in a work folder and guards the
result. ``qretrain run`` runs the same stages.
"""

from qretrain.recipe.compress import Compressed, Quality, compress, run_recipe
from qretrain.recipe.settings import RecipeSettings, Recover, Target
from qretrain.recipe.split import Parts, split

__all__ = ["Compressed", "Parts", "Quality", "RecipeSettings", "Recover", "Target", "compress",
           "run_recipe", "split"]  # fmt: skip
