"""lite_bert: BERT, ALBERT and DistilBERT as one JAX/Flax encoder family."""

__version__ = "0.1.0"
