"""`xvlm bench`: speed, memory and quality of a loaded model, against a plain transformers process."""
