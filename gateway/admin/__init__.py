"""The admin listener: the staff web page and its API (:mod:`gateway.admin.api`),
who may use them (:mod:`gateway.admin.auth`, :mod:`gateway.admin.settings`),
the live event stream (:mod:`gateway.admin.stream`) and the Prometheus metrics
(:mod:`gateway.admin.metrics`)."""
