"""The PostgreSQL store: many workers and kernels on one database (``postgresql://`` URLs).

Imported only when a URL asks for it, so psycopg is needed only by those who use it.
"""
