"""Icons from resources/icons, drawn from SVG at whatever size and pixel ratio they are shown, in the theme's colour."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from PySide6.QtCore import QByteArray, QPoint, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QIconEngine, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer


def resources_dir() -> Path:
    """resources/ beside the app package, or inside a frozen build's bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    return Path(bundle) / "resources" if bundle else Path(__file__).resolve().parents[1] / "resources"


@functools.cache
def _svg_text(name: str) -> str:
    return (resources_dir() / "icons" / f"{name}.svg").read_text(encoding="utf-8")


class _SvgIconEngine(QIconEngine):
    """Renders one SVG sharp at every size; `currentColor` becomes the palette's text colour."""

    def __init__(self, name: str, color: QColor, disabled: QColor):
        super().__init__()
        self._name, self._color, self._disabled = name, QColor(color), QColor(disabled)
        text = _svg_text(name)
        self._normal = QSvgRenderer(QByteArray(text.replace("currentColor", color.name()).encode()))
        self._greyed = QSvgRenderer(QByteArray(text.replace("currentColor", disabled.name()).encode()))

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        renderer = self._greyed if mode == QIcon.Mode.Disabled else self._normal
        renderer.render(painter, QRectF(rect))

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
        return _SvgIconEngine(self._name, self._color, self._disabled)


def icon(name: str, color: QColor | None = None) -> QIcon:
    """The icon `resources/icons/<name>.svg` in `color` (default: the current palette's text colour)."""
    palette = QGuiApplication.palette()
    color = color or palette.color(QPalette.ColorRole.WindowText)
    disabled = palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText)
    return QIcon(_SvgIconEngine(name, color, disabled))


def app_icon() -> QIcon:
    """The application icon in full colour (the SVG icon engine draws it at every size)."""
    return QIcon(str(resources_dir() / "icons" / "app.svg"))
