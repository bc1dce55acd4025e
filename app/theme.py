"""The app's colours: the system's scheme, or light or dark as chosen, and a style sheet derived from the palette.

Many Linux desktops do not tell Qt about their dark mode, hence View > Theme. A chosen theme is a whole palette
set on the application; "system" clears it, so Qt's own (the platform's, or Fusion's) comes back.
"""

from __future__ import annotations

from PySide6.QtCore import QT_TRANSLATE_NOOP
from PySide6.QtGui import QColor, QGuiApplication, QPalette

from app.icons import resources_dir

# setting value -> View > Theme menu text (translated where the menu is built)
THEMES = {"system": QT_TRANSLATE_NOOP("MainWindow", "&System"), "light": QT_TRANSLATE_NOOP("MainWindow", "&Light"),
          "dark": QT_TRANSLATE_NOOP("MainWindow", "&Dark")}


# Role -> (light, dark). Disabled text is derived below.
_COLOURS = {
    QPalette.ColorRole.Window: ("#f3f3f3", "#26272b"),
    QPalette.ColorRole.WindowText: ("#1f1f1f", "#e6e6e6"),
    QPalette.ColorRole.Base: ("#ffffff", "#1d1e21"),
    QPalette.ColorRole.AlternateBase: ("#f6f6f6", "#2a2b30"),
    QPalette.ColorRole.Text: ("#1f1f1f", "#e6e6e6"),
    QPalette.ColorRole.Button: ("#f0f0f0", "#34353a"),
    QPalette.ColorRole.ButtonText: ("#1f1f1f", "#e6e6e6"),
    QPalette.ColorRole.BrightText: ("#ffffff", "#ffffff"),
    QPalette.ColorRole.Highlight: ("#2f6fd6", "#4d8fef"),
    QPalette.ColorRole.HighlightedText: ("#ffffff", "#ffffff"),
    QPalette.ColorRole.Link: ("#1f5fbf", "#7fb0ff"),
    QPalette.ColorRole.ToolTipBase: ("#ffffe1", "#3a3b40"),
    QPalette.ColorRole.ToolTipText: ("#1f1f1f", "#e6e6e6"),
    QPalette.ColorRole.PlaceholderText: ("#7a7a7a", "#8d8e93"),
    QPalette.ColorRole.Light: ("#ffffff", "#45464c"),
    QPalette.ColorRole.Midlight: ("#e3e3e3", "#3a3b40"),
    QPalette.ColorRole.Mid: ("#b8b8b8", "#2f3034"),
    QPalette.ColorRole.Dark: ("#9f9f9f", "#18191c"),
    QPalette.ColorRole.Shadow: ("#767676", "#0b0b0c"),
}


def palette_for(theme: str) -> QPalette | None:
    """The palette of a chosen theme ("light" or "dark"); None for "system" (or anything unknown)."""
    if theme not in ("light", "dark"):
        return None
    column = 1 if theme == "dark" else 0
    palette = QPalette()
    for role, colours in _COLOURS.items():
        palette.setColor(role, QColor(colours[column]))
    disabled = QColor(_COLOURS[QPalette.ColorRole.PlaceholderText][column])
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return palette


def use_theme(theme: str) -> None:
    """Colour the whole application as `theme` says, at once ("system": as the desktop does)."""
    QGuiApplication.setPalette(palette_for(theme) or QPalette())


def is_dark(palette: QPalette | None = None) -> bool:
    palette = palette or QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def _mix(first: QColor, second: QColor, amount: float) -> str:
    """`amount` of `second` over `first`, as #rrggbb."""
    return QColor(
        round(first.red() * (1 - amount) + second.red() * amount),
        round(first.green() * (1 - amount) + second.green() * amount),
        round(first.blue() * (1 - amount) + second.blue() * amount),
    ).name()


def warning_colours(palette: QPalette | None = None) -> tuple[QColor, QColor]:
    """The background and border of what warns: the banner, the notice that a chat outgrew the model."""
    if is_dark(palette):
        return QColor("#4a3413"), QColor("#8a6a2a")
    return QColor("#fff4e0"), QColor("#f0c36d")


def match_colour(palette: QPalette | None = None) -> QColor:
    """The background of the words a search matched."""
    palette = palette or QGuiApplication.palette()
    return QColor(_mix(palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Highlight), 0.35))


def error_colour(palette: QPalette | None = None) -> QColor:
    """The colour of what failed: an error's sentence, its icon."""
    return QColor("#ff8a80" if is_dark(palette) else "#b3261e")


def muted_colour(palette: QPalette | None = None) -> QColor:
    """Secondary text (timings, names, hints): paler than the text, yet 4.5:1 against the base for small type."""
    palette = palette or QGuiApplication.palette()
    return QColor(_mix(palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.Base), 0.3))


def style_sheet(palette: QPalette | None = None) -> str:
    """The app's style sheet in `palette`'s colours. Every widget reached with Tab shows that it has the focus:
    the style draws the mark for some; the rules with `:focus` below outline the others in the highlight colour
    (a picture's ring has a band of the background inside it, so it shows on a picture of that colour too)."""
    palette = palette or QGuiApplication.palette()
    base = palette.color(QPalette.ColorRole.Base)
    window = palette.color(QPalette.ColorRole.Window)
    text = palette.color(QPalette.ColorRole.Text)
    accent = palette.color(QPalette.ColorRole.Highlight)
    accent_text = palette.color(QPalette.ColorRole.HighlightedText)
    muted = muted_colour(palette).name()
    border = _mix(base, text, 0.18)
    field_border = _mix(base, text, 0.55)  # what takes input shows its edge (3:1) on the base and window colours
    error = error_colour(palette).name()
    banner, banner_border = (colour.name() for colour in warning_colours(palette))
    check_mark = (resources_dir() / "icons" / "check-mark.svg").as_posix()  # white: drawn on the highlight colour
    return f"""
    QWidget#conversation, QScrollArea {{ background: {base.name()}; }}
    QFrame#bubble {{ background: {_mix(base, accent, 0.16)}; border-radius: 14px; }}
    QLabel#footer {{ color: {muted}; font-size: 8.5pt; }}
    QLabel#footer[error="true"] {{ color: {error}; font-size: 9pt; }}
    QLabel#emptyState {{ color: {muted}; }}
    QFrame#contextNotice {{ background: {banner}; border: 1px solid {banner_border}; border-radius: 8px; }}
    QFrame#contextNotice QLabel {{ color: {text.name()}; background: transparent; border: none; }}
    QFrame#userMessage[unseen="true"] QLabel, QFrame#assistantMessage[unseen="true"] QTextBrowser {{
        color: {_mix(text, base, 0.55)}; }}
    QFrame#composer {{ background: {base.name()}; border-top: 1px solid {border}; }}
    QPlainTextEdit {{ background: {_mix(base, text, 0.04)}; border: 1px solid {border}; border-radius: 10px; }}
    QPlainTextEdit:focus {{ border: 1px solid {accent.name()}; }}
    QLineEdit {{ background: {_mix(base, text, 0.04)}; border: 1px solid {field_border}; border-radius: 4px;
                 padding: 2px 4px; }}
    QLineEdit:focus {{ border: 1px solid {accent.name()}; }}
    QGroupBox::indicator {{ width: 12px; height: 12px; border: 1px solid {field_border}; border-radius: 3px;
                            background: {base.name()}; }}
    QGroupBox::indicator:checked {{ background: {accent.name()}; border-color: {accent.name()};
                                    image: url("{check_mark}"); }}
    QGroupBox::indicator:focus {{ border-color: {accent.name()}; }}
    QToolButton {{ border: 2px solid transparent; border-radius: 6px; padding: 2px; }}
    QToolButton:hover {{ background: {_mix(base, text, 0.08)}; }}
    QToolButton:pressed {{ background: {_mix(base, text, 0.16)}; }}
    QToolButton:focus {{ border-color: {accent.name()}; }}
    QToolButton#sendButton {{ background: {accent.name()}; border-radius: 18px; border: none; }}
    QToolButton#sendButton:hover {{ background: {_mix(accent, accent_text, 0.15)}; }}
    QToolButton#sendButton[busy="true"] {{ background: {_mix(base, text, 0.75)}; }}
    QToolButton#sendButton:focus {{ border: 2px solid {text.name()}; }}
    QToolButton#sendButton[busy="true"]:focus {{ border: 2px solid {accent.name()}; }}
    QFrame#imageChip {{ border: 1px solid {border}; border-radius: 8px; background: {_mix(base, text, 0.03)}; }}
    QLabel#chipName {{ color: {muted}; }}
    QLabel#notice {{ color: {error}; }}
    QFrame#editBar {{ background: {_mix(base, accent, 0.12)}; border-radius: 6px; }}
    QFrame#banner {{ background: {banner}; border: 1px solid {banner_border}; border-radius: 8px; }}
    QWidget#firstRun {{ background: {window.name()}; }}
    QFrame#card {{ background: {base.name()}; border: 1px solid {border}; border-radius: 12px; }}
    QLabel#downloadStatus {{ color: {muted}; }}
    QLabel#errorText {{ color: {error}; }}
    QListWidget#chatList {{ background: {window.name()}; border: none; }}
    QListWidget#chatList::item {{ padding: 6px 4px; border-radius: 6px; }}
    QListWidget#chatList::item:selected {{ background: {_mix(window, accent, 0.22)}; color: {text.name()}; }}
    QScrollArea#conversationView {{ border: 2px solid transparent; }}
    QScrollArea#conversationView:focus {{ border: 2px solid {accent.name()}; }}
    QLabel#thumbnail {{ border: 2px solid transparent; padding: 2px; border-radius: 4px; }}
    QLabel#thumbnail:focus {{ border: 2px solid {accent.name()}; background: {base.name()}; }}
    QFrame#userMessage[found="true"], QFrame#assistantMessage[found="true"] {{
        background: {_mix(base, accent, 0.10)}; border-radius: 8px; }}
    """
