"""Models-from-code entry point: MLflow runs this file to build the generator pyfunc model."""

from anomaly.packaged.generator_pyfunc import GenadGeneratorModel
from anomaly.packaged.pyfunc_base import serve

serve(GenadGeneratorModel())
