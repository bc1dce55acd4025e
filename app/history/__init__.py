"""Chat history: the SQLite database, the image files beside it, export and import, and the service widgets use."""
