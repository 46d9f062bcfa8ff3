"""Datasets: in-memory supervised data for full-batch training."""

from phasescope.data.supervised import DigitsConfig, SupervisedData, encode_targets, load_digits_data

__all__ = ["DigitsConfig", "SupervisedData", "encode_targets", "load_digits_data"]
