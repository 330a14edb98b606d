"""The distill worker: teacher client, debiasing, student training (batch + stream), export, promotion."""
