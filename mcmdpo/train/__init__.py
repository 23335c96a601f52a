"""Training: one entry point for every stage (``python -m mcmdpo.train``: :mod:`.cli`), its
arguments and YAML recipes, the SFT and DPO/MCM-DPO trainers with what they add to
``transformers.Trainer`` (per-component learning rates, cheap length grouping, resume with the
full weights and complete-checkpoint markers, preemption), the data checks run once per job and
cached (:mod:`.data_checks`, sharing the work among processes through :mod:`.shared_work`), the
reference log-prob cache, what several nodes need, the compact console and the training curves.
The preference losses and the steps that score a batch's sequences are :mod:`mcmdpo.preference`'s."""
