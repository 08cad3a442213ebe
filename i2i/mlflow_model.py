"""What MLflow runs to build i2i's pyfunc model when it loads one ("models from code"; the
model folder holds a copy of this file and of the package): :class:`i2i.serving.ImageTranslator`."""

import mlflow.models

from i2i.serving import ImageTranslator

mlflow.models.set_model(ImageTranslator())
