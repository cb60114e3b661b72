"""NeedleEval: the needle-in-a-haystack grid over lengths × depths (RECIPE.md section 3)."""
