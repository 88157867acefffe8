"""imzML 1.1 input and output (continuous and processed mode)."""

from doublebackprop.msi.data.imzml.reader import ImzMLReader, open_imzml
from doublebackprop.msi.data.imzml.writer import ImzMLWriter, write_imzml

__all__ = ["ImzMLReader", "ImzMLWriter", "open_imzml", "write_imzml"]
