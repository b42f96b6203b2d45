"""Models-from-code entry point: MLflow runs this file to build the generator pyfunc model."""

from anomaly.generator_pyfunc import GenadGeneratorModel
from anomaly.pyfunc_base import serve

serve(GenadGeneratorModel())
