"""Developer tools: they check or regenerate files of the repo (dvc.yaml's code deps, the offline plots
template, the JSON Schemas in schemas/). No stage, flow or coordinator imports them; ``make run`` does not need them."""
