"""The measured recipe as one call: ``qretrain.compress(model, data, target="7x")``.

It sits above every stage (analysis, planner, apply, retrain, storage): it shares
the user's unlabeled images out, runs the stages in a work folder and guards the
result. ``qretrain run`` runs the same stages. Its names load on first use
(``qretrain._lazy``): ``settings`` imports without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.recipe.compress": ("Compressed", "Quality", "compress", "run_recipe"),
    "qretrain.recipe.settings": ("RecipeSettings", "Recover", "Target"),
    "qretrain.recipe.split": ("Parts", "split"),
})  # fmt: skip
