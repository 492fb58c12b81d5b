"""Views that read a run and never change its store: the report and its plots, TensorBoard
and MLflow (following the store), and the export of a searched child as a network."""
