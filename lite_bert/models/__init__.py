"""Models: the encoder family, heads, students, parameter counts, FLOPs, Hugging Face conversion."""
