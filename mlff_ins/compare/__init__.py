"""Laying calculations over each other and over measured data: readers of measured files,
agreement metrics, overlays, residual maps and exports (`mlff-ins compare`, `mlff-ins export`)."""
