"""The GSS training package: the Accelerate scripts (one per stage, run as `python training/<script>.py` or with
`accelerate launch`) and the modules they, the benchmarks and the tests share (`common`, `data`, `evaluation`,
`metrics`, `baseline_model`). It is importable once the repository is installed (`pip install -e .`)."""
