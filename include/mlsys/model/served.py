"""The logged model's code (MLflow *models from code*): MLflow runs this file to build the pyfunc.

Nothing of the model is pickled: this file is the model's Python, and its
weights and config are the files of model/artifact.py.
"""

from mlflow.models import set_model

from mlsys.model.pyfunc import TextClassifierPyfunc

set_model(TextClassifierPyfunc())
