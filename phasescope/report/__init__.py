"""Figures and reports drawn from metric rows and analyses (matplotlib, Agg backend).

The backend is chosen here, once, before any report module imports pyplot: reports are files, never
windows, and a headless machine has no display.
"""

import matplotlib

matplotlib.use("Agg")
