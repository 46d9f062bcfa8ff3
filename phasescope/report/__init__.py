"""Figures and reports drawn from metric rows and analyses (matplotlib, Agg backend)."""
