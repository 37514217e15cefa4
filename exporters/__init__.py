"""Model exporters that take plain inputs (a module and example inputs) and never import hubcompress.

The ONNX exporter lives in :mod:`exporters.onnx`; its failures are typed in :mod:`exporters.errors`.
"""
