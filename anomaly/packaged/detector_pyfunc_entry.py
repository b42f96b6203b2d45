"""Models-from-code entry point: MLflow runs this file to build the detector pyfunc model."""

from anomaly.packaged.detector_pyfunc import GenadVAEModel
from anomaly.packaged.pyfunc_base import serve

serve(GenadVAEModel())
