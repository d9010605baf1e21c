"""Exporters: weights as tables (``tables``), spreadsheets (``excel``, ``excel_formulas``) and C.

Each exporter is its own module and imports its optional dependencies (openpyxl) only when
called, so importing this package costs nothing beyond numpy.
"""
