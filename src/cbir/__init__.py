"""Content-based image retrieval: datasets, backbones, hashing, metric learning, search and evaluation."""
