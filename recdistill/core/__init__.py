"""The shared core, at the bottom of the house: contracts, the feature schema and encoder, datasets,
metrics, the sample log, settings helpers. It imports no app (`teacher_service`, `student_server`,
`distill_worker`) and nothing from the wiring above them (`recdistill.cli`, `recdistill.demo`)."""
