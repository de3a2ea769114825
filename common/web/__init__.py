"""REST and admin plumbing shared by the four services' web processes.

api.py: bearer-token authentication, strict fields, errors as JSON, pagination, the
body size limit. views.py: health, metrics and the OpenAPI schema views; urls.py their
routes. admin.py: the read-only admin for evidence (orders, payments, messages).
gunicorn_conf.py: the server hook that keeps multiprocess metrics right.
"""
