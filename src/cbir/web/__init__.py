"""Looking at retrieval in a browser.

* :mod:`cbir.web.server` -- ``cbir serve``: a local search page over a built pipeline (upload an
  image or pick a query of the split; see the top k with distances, classes, hits and misses).
* :mod:`cbir.web.explorer` -- a static HTML page per dataset, written by the report stage, to
  browse the queries and compare two methods or code lengths side by side.
"""
