"""Library behind ``precipgen evaluate``, in the manner of pysteps' ``verification/``:

- :mod:`.compare`: open the models of each role, predict, score them all (scores 1-7), figures;
- :mod:`.scoring`: the score families on physical-unit ensembles (the math in ``scores/``);
- :mod:`.augmentation_gain`: does augmentation help SRDRN? Arms, bootstrap CIs, verdicts;
- :mod:`.report`: ``report.md`` / ``report.html`` / ``evaluation.json``;
- :mod:`.console`: the seed's ``test_generative_outputs.py`` sections and wording.
"""
