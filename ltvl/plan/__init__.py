"""What a sweep will do, decided before anything runs: its config (YAML and ``--set``), its
scheduling options, its controls, and the record a resume is checked against. Pure: imports
neither Ray nor MLflow, so a plan can be built, printed and tested anywhere."""
