"""`mlff-ins serve`: a local web page and JSON API over the package's public functions.

:func:`create_app` (in :mod:`mlff_ins.web.app`, which documents every endpoint) builds a FastAPI
app: upload a structure and see the predicted VISION/TOSCA S(E), overlay a measurement with the
comparison metrics, and, with a force field, run the phonon + INS route as a background job
(:mod:`mlff_ins.web.jobs`). The page is plain HTML and JavaScript in ``static/``; Plotly comes
from the installed plotly wheel; nothing is fetched from the internet. Importing this package
does not import FastAPI: ``from mlff_ins.web.app import create_app`` does.
"""

__all__ = ["Settings", "create_app"]


def __getattr__(name):
    # FastAPI is an optional extra: load it only when the app is asked for
    if name in __all__:
        from mlff_ins.web import app

        return getattr(app, name)
    raise AttributeError(name)
