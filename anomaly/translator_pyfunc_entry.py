"""Models-from-code entry point: MLflow runs this file to build the translator pyfunc model."""

import mlflow

from anomaly.translator_pyfunc import GenadTranslatorModel

mlflow.models.set_model(GenadTranslatorModel())
