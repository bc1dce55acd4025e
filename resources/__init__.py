"""The app's icons, translations and test picture, installed as the package `xvlm_chat_resources` (see
pyproject.toml) so that `app.icons.resources_dir()` finds them through importlib.resources in any install."""
