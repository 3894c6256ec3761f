"""The admin listener: the staff web page and its API.

One small resource per part of the API, each a class with its own Klein app
and only the dependencies it uses: :mod:`~gateway.admin.session` (login),
:mod:`~gateway.admin.cameras`, :mod:`~gateway.admin.events`,
:mod:`~gateway.admin.platelist`, :mod:`~gateway.admin.status` (status,
dead letters, metrics), :mod:`~gateway.admin.stream` (the live event stream)
and :mod:`~gateway.admin.page`. :mod:`~gateway.admin.root` mounts them under
one root and serves it with bounded bodies; :func:`gateway.admin.root.build_admin`
builds it from the gateway's parts. Who may use each route is declared on the
route (:mod:`~gateway.admin.access`); accounts, sessions and the login throttle
are in :mod:`~gateway.admin.auth`, the ``[admin]`` settings in
:mod:`~gateway.admin.settings`, the Prometheus metrics in
:mod:`~gateway.admin.metrics`."""
