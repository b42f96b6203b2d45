"""Models-from-code entry point: MLflow runs this file to build the pyfunc model."""

import mlflow

from anomaly.pyfunc import GenadVAEModel

mlflow.models.set_model(GenadVAEModel())
