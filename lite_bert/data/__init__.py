"""Data: tokenizers, corpora, masking, pretraining and GLUE batches (imports nothing above it)."""
