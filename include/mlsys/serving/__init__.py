"""serve: predictions from the registered champion, offline in batches and online over HTTP.

    champion   resolve a registered version or alias and load it as a Scorer
    scorer     Scorer: the vectorised featurizer and the classifier, texts in, probabilities out
    batch/     the batch stage: a dataset streamed in chunks, scored on all cores (or as shards)
    online/    ``mlsys serve``: FastAPI, adaptive batching, a cache, metrics, alias polling

Modules are imported where used: importing this package costs nothing.
"""
