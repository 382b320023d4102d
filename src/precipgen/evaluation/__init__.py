"""Library behind ``precipgen evaluate``: loading models, predicting, scoring, console output.

- :mod:`.models`: URIs -> generators with their run ids (lineage), compatibility checks;
- :mod:`.scoring`: the issue's score families 1-7 on physical-unit ensembles;
- :mod:`.console`: the seed's ``test_generative_outputs.py`` sections and wording.
"""
