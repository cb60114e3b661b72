"""ContextExtension: continual pretraining at long sequence length with DeepSpeed (RECIPE.md section 2)."""
