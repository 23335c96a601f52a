"""The browser app: ``python -m mcmdpo.app --model CKPT [--model CKPT ...]`` compares checkpoints;
``python -m mcmdpo.app annotate ...`` collects people's preferences, ``export`` turns them into pairs.

- :mod:`mcmdpo.app.engine`: the model side, free of web code (load as inference loads, generate,
  score an alt-text and its image and context margins with the preference evaluation's code);
- :mod:`mcmdpo.app.uploads`: what a request may hold (the image, the texts) and the messages
  that refuse the rest;
- :mod:`mcmdpo.app.examples`: the examples the page offers (synthetic records, or a data file's);
- :mod:`mcmdpo.app.page`: the Gradio page;
- :mod:`mcmdpo.app.candidates_file`: the annotation page's records, read and checked;
- :mod:`mcmdpo.app.annotation_store`: each annotator's queue over the annotation database;
- :mod:`mcmdpo.app.annotate_server`: the annotation page's server (standard library) and
  ``annotate_static/``, its page;
- :mod:`mcmdpo.app.annotate_cli`: ``annotate``'s command line;
- :mod:`mcmdpo.app.agreement`, :mod:`mcmdpo.app.export`: agreement between annotators, and pairs;
- :mod:`mcmdpo.app.__main__`: the command line.
"""
