"""DataMixture: build a length-upsampled, tokenized, packed data mixture (RECIPE.md section 1)."""
