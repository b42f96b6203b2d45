"""Models-from-code entry point: MLflow runs this file to build the detector pyfunc model."""

from anomaly.pyfunc import GenadVAEModel
from anomaly.pyfunc_base import serve

serve(GenadVAEModel())
