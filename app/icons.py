"""Icons from resources/icons, drawn from SVG at whatever size and pixel ratio they are shown, in the theme's colour."""

from __future__ import annotations

import functools
import importlib.resources
import sys
from pathlib import Path

from PySide6.QtCore import QByteArray, QPoint, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QIconEngine, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer


def resources_dir() -> Path:
    """The icons, translations and test picture: inside a frozen build's bundle, else the installed package
    `xvlm_chat_resources` (a wheel's copy, or the source tree's resources/ in an editable install)."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    try:
        return Path(str(importlib.resources.files("xvlm_chat_resources")))
    except ModuleNotFoundError:  # `python main.py` in a clone that was never installed
        return Path(__file__).resolve().parents[1] / "resources"


@functools.cache
def _svg_text(name: str) -> str:
    return (resources_dir() / "icons" / f"{name}.svg").read_text(encoding="utf-8")


class _SvgIconEngine(QIconEngine):
    """Renders one SVG sharp at every size; `currentColor` becomes `color`, or else the palette's text colour at
    the moment it is drawn, so a theme change redraws every such icon in the new colours."""

    def __init__(self, name: str, color: QColor | None = None):
        super().__init__()
        self._name, self._color = name, QColor(color) if color is not None else None
        self._renderers: dict[str, QSvgRenderer] = {}

    def _renderer(self, mode: QIcon.Mode) -> QSvgRenderer:
        palette = QGuiApplication.palette()
        if mode == QIcon.Mode.Disabled:
            color = palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText)
        else:
            color = self._color or palette.color(QPalette.ColorRole.WindowText)
        key = color.name()
        if key not in self._renderers:
            self._renderers[key] = QSvgRenderer(QByteArray(_svg_text(self._name).replace("currentColor", key).encode()))
        return self._renderers[key]

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        self._renderer(mode).render(painter, QRectF(rect))

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        return self.scaledPixmap(size, mode, state, 1.0)

    def scaledPixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State, scale: float) -> QPixmap:
        pixmap = QPixmap(size * scale)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        self.paint(painter, QRect(QPoint(0, 0), pixmap.size()), mode, state)
        painter.end()
        pixmap.setDevicePixelRatio(scale)
        return pixmap

    def clone(self) -> QIconEngine:
        return _SvgIconEngine(self._name, self._color)


def icon(name: str, color: QColor | None = None) -> QIcon:
    """The icon `resources/icons/<name>.svg` in `color` (default: the palette's text colour whenever it is drawn)."""
    return QIcon(_SvgIconEngine(name, color))


def app_icon() -> QIcon:
    """The application icon in full colour (the SVG icon engine draws it at every size)."""
    return QIcon(str(resources_dir() / "icons" / "app.svg"))
