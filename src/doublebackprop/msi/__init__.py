"""Mass-spectrometry imaging: imzML data, preprocessing, a multi-lab simulator and the
tumour-typing experiment (IsotopeNet, Deep Relevance Regularization)."""
