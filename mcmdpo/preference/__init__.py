"""The preference score: what DPO and MCM-DPO compute for each record.

- :mod:`~mcmdpo.preference.layout`: which (context, image, response) triples a record is scored on
  and which pairs of them the loss compares (the term registry);
- :mod:`~mcmdpo.preference.batch`: what rides along with each record in a batch;
- two ways to score a batch's sequences, each a collator and a log-prob function that go together:
  :mod:`~mcmdpo.preference.plain` (every sequence in full; the oracle) and
  :mod:`~mcmdpo.preference.tree` (a record's sequences per image packed into one prefix-tree row;
  the default), chosen by :mod:`~mcmdpo.preference.packing`;
- :mod:`~mcmdpo.preference.losses`: the maths, as pure functions;
- :mod:`~mcmdpo.preference.objectives`: how the terms' margins become a loss (``--objective``:
  MCM-DPO's sigmoid, IPO, SimPO, ORPO, KTO, mDPO, ... and weighted sums of them).

Training, the held-out evaluation and the app all score through this package."""
