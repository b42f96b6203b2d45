"""Packaged models: a trained model folded together with what its consumers need, one module per
kind, and the MLflow pyfunc model that serves each.

- `scoring`: the detector (`ScoringModel`: feature columns, scores, p-values, flags);
- `generation`: the generator (`GeneratorBundle`: sample columns, classes, table scaler);
- `translation`: the CycleGAN translator (`TranslatorBundle`).

Each is a folder of state_dicts and JSON (nothing pickled), written with `save_*` and read with
`load_*`. `pyfunc_base` holds the one pyfunc base class; `<kind>_pyfunc.py` adapts a bundle to
it and `<kind>_pyfunc_entry.py` is the models-from-code entry file MLflow logs
(`pipelines.servables.SERVABLES` names them).
"""
