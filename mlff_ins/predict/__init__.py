"""The direct structure-to-spectrum predictor: database builder (local processes or Dask),
networks, shipped weights (`mlff-ins database`, `mlff-ins predictor`, `mlff-ins predict`)."""
