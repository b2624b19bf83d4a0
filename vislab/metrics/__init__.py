"""Metrics: classification, detection, segmentation, retrieval, generative (Fréchet distance, AUROC), text (BLEU, perplexity)."""
