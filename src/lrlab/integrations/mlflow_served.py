"""The file MLflow logs as the served model's code (models from code: nothing pickled): it names
`ImageClassifier` as the model, which loads the run's checkpoint from the model's artifacts."""

from mlflow.models import set_model

from lrlab.integrations.mlflow_pyfunc import ImageClassifier

set_model(ImageClassifier())
