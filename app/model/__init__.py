"""The model's side of the app: its thread, the model-server client, the first-run download and its progress."""
