"""Models-from-code entry point: MLflow runs this file to build the generator pyfunc model."""

import mlflow

from anomaly.generator_pyfunc import GenadGeneratorModel

mlflow.models.set_model(GenadGeneratorModel())
