"""Models-from-code entry point: MLflow runs this file to build the translator pyfunc model."""

from anomaly.packaged.pyfunc_base import serve
from anomaly.packaged.translator_pyfunc import GenadTranslatorModel

serve(GenadTranslatorModel())
